"""ai-credits-mcp: answers a tenant admin's questions about their AI credit usage from OpenMeter."""
