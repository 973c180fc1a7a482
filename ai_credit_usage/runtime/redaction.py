"""Secrets out of log text: what OpenMeter (or a proxy in front of it) sends back is logged only after the API key,
in every form an echo could carry it, is replaced by `[redacted]`.

An upstream that echoes the request's `Authorization` header into a problem's `detail` or `instance`, a redirect's
`Location` or a body would otherwise put the key in the log (issue 16 F5). `Redactor` is applied where upstream text
is logged (openmeter/http.py); `RedactingFilter` on the process's log handlers (main.py) catches anything else,
tracebacks included. Redact before cutting a text short: a cut could leave half a key that no longer matches.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # shorter "secrets" (a one-letter Redis password) would blank out ordinary log text


class Redactor:
    """Replaces each secret, raw or URL- or JSON-encoded, with `[redacted]`; blank or very short ones are ignored."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            for value in {(secret or "").strip(), secret or ""}:
                if len(value.strip()) >= MIN_SECRET_LENGTH:
                    forms |= {value, quote(value, safe=""), quote(value), quote_plus(value), json.dumps(value)[1:-1]}
        # Longest first: a form that contains another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def __bool__(self) -> bool:
        return bool(self._forms)


class RedactingFilter(logging.Filter):
    """A handler filter: the record's message, arguments applied, and its traceback text pass through `redact`."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._redact:
            return True
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text = self._redact(record.exc_text)
            if text != record.exc_text:  # handlers that read exc_info itself (OpenTelemetry's) get the text only
                record.exc_text, record.exc_info = text, None
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


def redact_log_handlers(secrets: Iterable[str | None], logger: logging.Logger | None = None) -> RedactingFilter:
    """Put one `RedactingFilter` on every handler of `logger` (the root logger): console and OpenTelemetry alike."""
    redacting = RedactingFilter(Redactor(secrets))
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(redacting)
    return redacting
