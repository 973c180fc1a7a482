"""Who is asking and whether they may: the TAIS headers (`caller`) or a verified JWT (`jwt_verifier`,
`token_caller`), the gate every tool call passes (`gate`), the bearer-token gate in front of /mcp (`bearer_gate`) and
the stateful-session guard (`session_guard`). It may import every other sub-package (the gate answers a refusal with
an MCP error result); only the pipeline, the tool declarations and server.py import it."""
