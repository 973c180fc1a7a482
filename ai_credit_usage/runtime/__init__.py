"""What every part of the server leans on: the settings (`settings`), the errors written for the chat user
(`errors`), the time window and the clock (`window`), one tool call's record and the caller in it (`tool_call`), the
audit line (`audit`), OpenTelemetry (`telemetry`) and secrets kept out of logs (`redaction`). It imports no other
part of the package: every other sub-package may import it."""
