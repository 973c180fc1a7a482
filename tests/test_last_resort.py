"""The last line of defence in `ReportMaker.answer`: a failure nobody foresaw is one sentence, not a traceback."""

from __future__ import annotations

import logging

import pytest

from ai_credit_usage.caller import Caller
from ai_credit_usage.downloads import MemoryDownloadStore
from ai_credit_usage.report import UNEXPECTED, ReportMaker
from ai_credit_usage.table import TableSink
from ai_credit_usage.window import Window
from tests.conftest import NOW, FakeClock

pytestmark = pytest.mark.anyio


async def test_an_unforeseen_failure_is_one_sentence_and_a_logged_traceback(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(NOW)
    downloads = MemoryDownloadStore(600, clock)
    reports = ReportMaker(downloads, download_base_url="http://localhost:8765", meter_slug="ai_credits", clock=clock)

    async def broken_question(tenant: str, window: Window, sink: TableSink) -> None:
        await sink.add([("acme", 1.0)])
        raise KeyError("a bug")

    with caplog.at_level(logging.ERROR, logger="ai_credit_usage.report"):
        result = await reports.answer(
            "get_credit_usage_by_tenant", Caller("acme", ("admin",)), ("tenant", "credits"), broken_question, None, None
        )
    assert result.is_error
    assert [block.text for block in result.content] == [UNEXPECTED]
    assert "Traceback" in caplog.text and "KeyError" in caplog.text
    assert len(downloads) == 0  # nothing half-made is offered for download
