"""Issue 16 F5: no secret reaches a log line, whatever OpenMeter (or a proxy in front of it) echoes back."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from pydantic import BaseModel, ValidationError

from ai_credit_usage.openmeter.http import shape_errors
from ai_credit_usage.openmeter.standin import OpenMeterStandIn
from ai_credit_usage.runtime.redaction import REDACTED, RedactingFilter, Redactor, redact_log_handlers
from tests.conftest import call_tool, text_of

ROOT = Path(__file__).resolve().parent.parent
KEY = 'om/secret+key=4f9c 2b7e"1d'  # characters that URL and JSON encoding change


@pytest.mark.parametrize(
    "form",
    [KEY, quote(KEY, safe=""), quote(KEY), quote_plus(KEY), json.dumps(KEY)[1:-1]],
    ids=["raw", "url-quoted", "path-quoted", "form-quoted", "json-escaped"],
)
def test_every_encoded_form_of_the_secret_is_replaced(form: str) -> None:
    redact = Redactor([KEY])
    assert redact(f"before {form} after") == f"before {REDACTED} after"


def test_text_without_secrets_is_unchanged_and_blank_secrets_are_ignored() -> None:
    redact = Redactor(["", "   ", None, "a", "pw"])
    assert redact("nothing to hide, a pw") == "nothing to hide, a pw"
    assert Redactor(["  padded-key\n"])("Bearer padded-key") == f"Bearer {REDACTED}"


def test_the_log_filter_redacts_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test_redaction")
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter(Redactor([KEY])))
    lines: list[str] = []
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        logger.warning("detail %s", f"Authorization: Bearer {KEY}")
        try:
            raise ValueError(f"upstream said {KEY}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert lines and all(KEY not in line for line in lines)
    assert REDACTED in lines[0] and REDACTED in lines[1] and "ValueError" in lines[1]


def test_every_handler_of_the_logger_gets_the_filter() -> None:
    logger = logging.getLogger("test_redaction.handlers")
    handlers = [logging.NullHandler(), logging.NullHandler()]
    for handler in handlers:
        logger.addHandler(handler)
    try:
        redacting = redact_log_handlers([KEY, None], logger)
        assert all(redacting in handler.filters for handler in handlers)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)


SECRET = "om-live-9Xc/+k=TOKEN"
ECHOES: list[tuple[str, dict]] = [
    (
        "problem-detail-and-instance",
        {
            "status": 400,
            "body": json.dumps(
                {"title": "Bad Request", "status": 400, "detail": f"bad header Authorization: Bearer {SECRET}",
                 "instance": f"urn:proxy:{quote(SECRET, safe='')}"}
            ).encode(),
        },
    ),
    ("retried-502", {"status": 502, "body": json.dumps({"detail": f"upstream saw Bearer {SECRET}"}).encode()}),
    (
        "redirect-location",
        {"status": 302, "body": b"", "headers": {"Location": f"https://login.example/?token={quote(SECRET, safe='')}"}},
    ),
    ("body-of-the-wrong-shape", {"status": 200, "body": json.dumps({"data": f"Bearer {SECRET}"}).encode(),
                                 "content_type": "application/json"}),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "fault"), ECHOES, ids=[name for name, _ in ECHOES])
async def test_an_upstream_echo_of_the_key_is_redacted_in_the_log(
    start_server: Callable[..., str],
    openmeter: OpenMeterStandIn,
    caplog: pytest.LogCaptureFixture,
    name: str,
    fault: dict,
) -> None:
    # INFO: what main.py writes. httpcore2's DEBUG lines quote response headers verbatim; main.py keeps that logger at
    # WARNING, and its handlers' RedactingFilter would catch them too.
    caplog.set_level(logging.INFO)
    openmeter.api_key = SECRET
    url = start_server(openmeter_api_key=SECRET)
    openmeter.fail(times=100, path_prefix="/api/v1/meters/ai_credits/query", **fault)
    result = await call_tool(url, "get_credit_usage_summary")
    assert result.is_error, text_of(result)
    logged = caplog.text
    for form in (SECRET, quote(SECRET, safe=""), quote(SECRET), quote_plus(SECRET)):
        assert form not in logged
        assert form not in text_of(result)
    # a body of the wrong shape is logged as where and what (issue 23): nothing of it is there to redact
    assert REDACTED in logged if name != "body-of-the-wrong-shape" else "unreadable meter query: data:" in logged


def test_main_puts_the_filter_on_its_log_handlers(tmp_path: Path) -> None:
    """main.py as an operator runs it, with uvicorn replaced by a stand-in that logs an echo of the key and a
    traceback quoting it: the console shows neither."""
    script = (
        "import logging, sys, uvicorn, main\n"
        "def run(app, **options):\n"
        "    logging.getLogger('some.library').warning('upstream said Bearer %s', sys.argv[1])\n"
        "    try:\n"
        "        raise RuntimeError('boom ' + sys.argv[1])\n"
        "    except RuntimeError:\n"
        "        logging.getLogger('some.library').exception('failed')\n"
        "    print('limits', options['limit_concurrency'], options['timeout_keep_alive'])\n"
        "uvicorn.run = run\n"
        "sys.exit(main.main([]))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMETER_", "MCP_", "PUBLIC_", "TENANT_"))}
    result = subprocess.run(
        [sys.executable, "-c", script, SECRET],
        env={**clean, "OPENMETER_API_KEY": SECRET, "PYTHONPATH": str(ROOT), "MCP_KEEP_ALIVE_SECONDS": "7"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert f"upstream said Bearer {REDACTED}" in result.stderr
    assert f"RuntimeError: boom {REDACTED}" in result.stderr
    assert "limits 100 7" in result.stdout


LONG_KEY = "om-live-" + "Q7vR2kP9xW4mZ8tN1cB6yH3jL5dF0gS2aE7uK9oI4pV1rT6wX3nM8bC5z"  # 61 characters


def key_pieces_in(text: str) -> list[str]:
    """Every 8-character piece of the key found in `text`: a cut key slips past a redaction of the whole key."""
    pieces = {LONG_KEY[start : start + 8] for start in range(len(LONG_KEY) - 7)}
    return sorted(piece for piece in pieces if piece in text)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {"data": "x" * 80 + f" Authorization: Bearer {LONG_KEY}"},  # pydantic shortens this input to its ends
        {"data": [{"value": f"Bearer {LONG_KEY}", "windowStart": "?", "windowEnd": "?"}]},
        {"data": [{LONG_KEY: 1}]},  # an echo as a key: it becomes part of the error's location
    ],
    ids=["echo-at-the-end-of-a-long-value", "echo-in-a-field", "echo-as-a-key"],
)
async def test_a_body_of_the_wrong_shape_logs_where_and_what_never_the_input(
    start_server: Callable[..., str], openmeter: OpenMeterStandIn, caplog: pytest.LogCaptureFixture, body: dict
) -> None:
    """Issue 23: pydantic's error text quotes the input shortened to its two ends, so the redaction never saw the
    whole key and the log got its last 22 characters. Now a shape error logs each error's location and type."""
    caplog.set_level(logging.INFO)
    openmeter.api_key = LONG_KEY
    url = start_server(openmeter_api_key=LONG_KEY)
    fault = {"status": 200, "body": json.dumps(body).encode(), "content_type": "application/json"}
    openmeter.fail(times=100, path_prefix="/api/v1/meters/ai_credits/query", **fault)
    result = await call_tool(url, "get_credit_usage_summary")
    assert result.is_error and "could not be read" in text_of(result)
    logged = caplog.text + text_of(result)
    assert key_pieces_in(logged) == []
    assert "OpenMeter sent an unreadable meter query: " in logged


def test_a_location_that_holds_a_key_of_the_body_is_redacted_too() -> None:
    class Balances(BaseModel):
        grantBalances: dict[str, float]

    with pytest.raises(ValidationError) as error:
        Balances.model_validate({"grantBalances": {f"Bearer {LONG_KEY}": "x" * 100 + LONG_KEY}})
    described = shape_errors(error.value, Redactor([LONG_KEY]))
    assert described == "grantBalances.Bearer [redacted]: float_parsing"


@pytest.mark.anyio
@pytest.mark.parametrize("api", ["v3"], indirect=True)
async def test_a_customer_id_that_is_not_a_ulid_is_not_quoted_in_the_log(
    start_server: Callable[..., str], openmeter: OpenMeterStandIn, caplog: pytest.LogCaptureFixture, api: str
) -> None:
    """The v3 customer list's id is upstream text: quoted cut to 40 characters, an echoed key slipped past the
    redaction (as the meter id's did before issue 23)."""
    caplog.set_level(logging.INFO)
    openmeter.api_key = LONG_KEY
    url = start_server(openmeter_api_key=LONG_KEY, openmeter_credits_feature="ai_credits")
    body = {"data": [{"id": f"Bearer {LONG_KEY}", "key": "acme"}]}
    fault = {"status": 200, "body": json.dumps(body).encode(), "content_type": "application/json"}
    openmeter.fail(times=100, path_prefix="/api/v3/openmeter/customers", **fault)
    result = await call_tool(url, "get_credit_balance")
    assert result.is_error and "could not be read" in text_of(result)
    logged = caplog.text + text_of(result)
    assert key_pieces_in(logged) == []
    assert "OpenMeter sent an unreadable customer list: its customer id is not a ULID" in logged
