"""What every answer of `--demo` says first: the data is generated (the text, the workbook, the instructions)."""

DEMO_BANNER = "**DEMO DATA** — generated sample data, not your tenant's real usage."
DEMO_ABOUT = "DEMO — generated sample data, not real usage"
DEMO_INSTRUCTIONS = (
    "\nDEMO MODE: this server answers from generated sample data, not from real usage; say so whenever you relay "
    "its figures."
)
