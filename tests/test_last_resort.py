"""The last line of defence in `Pipeline.answer`: a failure nobody foresaw is one sentence, not a traceback."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from ai_credit_usage.answers.downloads import MemoryDownloadStore
from ai_credit_usage.pipeline import UNEXPECTED, Pipeline
from ai_credit_usage.questions.findings import Findings
from ai_credit_usage.questions.query import Query
from ai_credit_usage.questions.sink import TableSink
from ai_credit_usage.questions.usage import UsageService
from ai_credit_usage.runtime.tool_call import Caller
from ai_credit_usage.tools import TOOLS
from tests.conftest import NOW, FakeClock, v1_client

pytestmark = pytest.mark.anyio


async def test_an_unforeseen_failure_is_one_sentence_and_a_logged_traceback(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(NOW)
    downloads = MemoryDownloadStore(600, clock)
    usage = UsageService(v1_client("http://openmeter.invalid"), "ai_credits", max_event_rows=10)
    pipeline = Pipeline(
        usage, downloads, download_base_url="http://localhost:8765", source="OpenMeter meter 'ai_credits'", clock=clock
    )

    async def broken_question(service: UsageService, tenant: str, query: Query, sink: TableSink) -> Findings:
        sink.define(("tenant", "credits"))
        await sink.add([("acme", 1.0)])
        raise KeyError("a bug")

    spec = dataclasses.replace(TOOLS[0], question=broken_question)
    with caplog.at_level(logging.ERROR, logger="ai_credit_usage.pipeline"):
        result = await pipeline.answer(spec, Caller("acme", ("admin",)), {})
    assert result.is_error
    assert [block.text for block in result.content] == [UNEXPECTED]
    assert "Traceback" in caplog.text and "KeyError" in caplog.text
    assert len(downloads) == 0  # nothing half-made is offered for download
