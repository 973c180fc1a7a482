"""What a tool asks OpenMeter and what it computes from the answers: the questions (`usage`, one method per tool),
the parsed arguments (`query`), the walk over raw events (`event_walk`), the trend, the comparison, the forecast, the
balance and its runway, and the sink the rows go into (`sink`). A question returns what it found (`findings`); how
that is shown is the answer side's business. It may import `runtime` and the OpenMeter seam (`openmeter`), never
`answers`, `access` or the pipeline."""
