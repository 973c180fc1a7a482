"""How an answer is shaped from what a question found (`compose`): the markdown (`render`, `balance_report`), the
structured results and output schemas (`structured`), the workbook's sheets (`summary`, `workbook`) and where it is
written (`table`, `workbook_writer`), the download store (`downloads`), the MCP results (`results`), and the inline
charts that hosts with MCP Apps show beside them (`views`). It may import `runtime`, `openmeter` and `questions`, never
`access` or the pipeline."""
