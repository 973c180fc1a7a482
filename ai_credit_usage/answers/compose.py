"""From what a question found to what the caller gets: the workbook, the text and the structured result, built the
same way for every tool. A question's findings are rows in the sink plus what it found besides (a comparison, a
trend, a forecast), or a balance; this is the one place that tells them apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from pydantic import BaseModel

from ai_credit_usage.answers.balance_report import (
    balance_workbook_content,
    no_allowance_text,
    not_metered_text,
    render_balance,
)
from ai_credit_usage.answers.render import render_preview
from ai_credit_usage.answers.structured import Answered, UsageResult, balance_result
from ai_credit_usage.answers.summary import Asked, summary_report
from ai_credit_usage.answers.table import WorkbookSink
from ai_credit_usage.answers.workbook import build_report_workbook
from ai_credit_usage.questions.findings import Findings
from ai_credit_usage.runtime.telemetry import traced_workbook


@dataclass(frozen=True)
class Link:
    """Where the workbook can be downloaded, until when."""

    url: str
    expires_at: datetime


async def workbook_of(asked: Asked, sink: WorkbookSink, findings: Findings) -> bytes | None:
    """The answer's workbook; None when there is nothing to download (a tenant without a metered allowance)."""
    found = findings.balance
    if found is None:
        await sink.progress(f"writing {sink.row_count:,} rows to the Excel file")
        report = summary_report(asked, sink, findings)
        return await traced_workbook(sink.workbook(report), rows=sink.row_count)
    if found.status != "metered":
        return None
    source = findings.source or asked.source
    report, sheets, chart = balance_workbook_content(found, demo=asked.demo, source=source, generated=asked.generated)
    return await anyio.to_thread.run_sync(build_report_workbook, report, sheets, chart)


def rows_of(sink: WorkbookSink, findings: Findings) -> int:
    """The rows the answer holds, for the audit line: a balance's grants, else the table's rows."""
    return len(findings.balance.grants) if findings.balance is not None else sink.row_count


def text_and_result(
    asked: Asked,
    sink: WorkbookSink,
    findings: Findings,
    link: Link | None,
    *,
    result: type[BaseModel],
    budget: int,
) -> tuple[str, dict[str, Any]]:
    """The markdown the model reads and the structured result `result` (the tool's output schema) describes."""
    found = findings.balance
    if found is not None:
        if link is None:
            text = no_allowance_text(found) if found.status == "none" else not_metered_text(found)
            return text, balance_result(found, None, None, asked.demo)
        text = render_balance(found, download_url=link.url, expires_at=link.expires_at)
        return text, balance_result(found, link.url, link.expires_at, asked.demo)
    if link is None or not issubclass(result, UsageResult):
        raise TypeError(f"{asked.tool}: a usage answer needs its link and a usage result model")
    window = asked.query.window
    preview = render_preview(
        sink,
        tenant=asked.tenant,
        window=window,
        download_url=link.url,
        expires_at=link.expires_at,
        now=asked.generated,
        findings=findings,
        budget=budget,
        filters=asked.query.filters,
    )
    answered = Answered(
        sink, findings, asked.tenant, window, link.url, link.expires_at, preview, asked.demo, asked.query.filters
    )
    return preview.text, result.of(answered).model_dump(mode="json", by_alias=True)
