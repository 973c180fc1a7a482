"""ai-credits-mcp: answers a tenant admin's questions about their AI credit usage from OpenMeter.

One folder per concern, dependencies one way (lowest first): `runtime` (settings, errors, the window, the call
record), `openmeter` (the seam and its clients), `questions` (what each tool asks and computes), `answers` (text,
structured result, workbook, downloads), `access` (who is asking). On top, `tools` declares each tool and `pipeline`
answers every call the same way. tests/test_architecture.py enforces the order."""
