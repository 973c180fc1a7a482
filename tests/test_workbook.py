from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook

from ai_credit_usage.answers.table import Table
from ai_credit_usage.answers.workbook import ABOUT_SHEET, DATA_SHEET, SUMMARY_SHEET, Report, build_workbook
from ai_credit_usage.questions.usage import EVENT_COLUMNS

ROOT = Path(__file__).resolve().parent.parent


def test_rows_types_and_formula_guard() -> None:
    hostile = ['=HYPERLINK("http://evil","x")', "+1+1", "-2", "@SUM(A1)", "plain", "bell\x07char"]
    rows = [
        (datetime(2026, 1, 15, 10, i, tzinfo=UTC), text, "chat", "p1", "acme", 0.125 * i)
        for i, text in enumerate(hostile)
    ]
    content = build_workbook(Table(EVENT_COLUMNS, rows), report=Report(about=(("tenant", "acme"), ("note", "=1+1"))))

    workbook = load_workbook(io.BytesIO(content))  # not read-only: we want data types
    assert workbook.sheetnames == [SUMMARY_SHEET, DATA_SHEET, ABOUT_SHEET]
    sheet = workbook[DATA_SHEET]
    values = list(sheet.iter_rows(values_only=True))
    assert values[0] == EVENT_COLUMNS
    assert len(values) == 1 + len(rows)
    for (time, _user, *_rest, credits), original in zip(values[1:], rows, strict=True):
        assert time == original[0].replace(tzinfo=None)  # a real date-time, in UTC
        assert credits == original[-1]
    users = [row[1] for row in values[1:]]
    assert users[:5] == hostile[:5]  # exactly as it was
    assert users[5] == "bellchar"  # XML cannot hold \x07
    for row in sheet.iter_rows(min_row=2):
        assert row[1].data_type == "s"
        assert row[0].is_date
        assert row[5].data_type == "n"
    assert workbook["About"]["B2"].value == "=1+1"
    assert workbook["About"]["B2"].data_type == "s"


def test_empty_table_still_has_the_header() -> None:
    content = build_workbook(Table(("tenant", "credits"), []))
    sheet = load_workbook(io.BytesIO(content))[DATA_SHEET]
    assert list(sheet.iter_rows(values_only=True)) == [("tenant", "credits")]


def test_a_failed_build_deletes_its_temporary_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where openpyxl's per-sheet files go
    rows = [(datetime(2026, 1, 15, tzinfo=UTC), "u", "chat", "p1", "acme", 1.0)] * 100
    build_workbook(Table(EVENT_COLUMNS, rows))
    assert list(scratch.iterdir()) == []  # a finished workbook leaves nothing, as before
    with pytest.raises(ValueError, match="zip"):  # a row one cell short fails part-way through the sheet
        build_workbook(Table(EVENT_COLUMNS, [*rows, (rows[0][0], "u")]))
    assert list(scratch.iterdir()) == []


# Run in a fresh interpreter whose forkserver (and so every workbook child) has TMPDIR pointing at the test's own
# directory; this test process's forkserver may already be running with the machine's /tmp.
WORKBOOK_PROCESS_SCENARIOS = """
import os, signal, sys, tempfile
from datetime import UTC, datetime
import anyio
from ai_credit_usage.runtime.errors import UserFacingError
from ai_credit_usage.questions.usage import EVENT_COLUMNS
from ai_credit_usage.answers.workbook import Report
from ai_credit_usage.answers.workbook_writer import WORKBOOK_FAILED, ProcessWorkbookWriter

ROWS = [(datetime(2026, 1, 15, tzinfo=UTC), f"u{i % 7}", "chat", "p1", "acme", 1.5) for i in range(5000)]
BAD_ROW = (ROWS[0][0], {"not": "a cell"}, "chat", "p1", "acme", 1.0)


def left_over():
    top = tempfile.gettempdir()
    found = (os.path.relpath(os.path.join(d, f), top) for d, _, files in os.walk(top) for f in files)
    return sorted(f for f in found if not f.startswith("pymp-"))  # the forkserver's socket, gone at exit


async def main():
    writer = await ProcessWorkbookWriter.start(EVENT_COLUMNS)  # finished normally
    await writer.append(ROWS)
    assert (await writer.finish(Report()))[:2] == b"PK"
    print("finished", left_over())

    writer = await ProcessWorkbookWriter.start(EVENT_COLUMNS)  # abandoned: the call failed elsewhere
    await writer.append(ROWS)
    writer.close()
    print("abandoned", left_over())

    writer = await ProcessWorkbookWriter.start(EVENT_COLUMNS)  # the child fails on a row and exits
    await writer.append([*ROWS, BAD_ROW])
    writer._process.join()
    files = left_over()
    assert len(files) == 1 and files[0].startswith("ai-credits-workbook-"), files  # its own directory, until close
    try:
        await writer.finish(Report())
    except UserFacingError as error:
        assert str(error) == WORKBOOK_FAILED
    print("failed", left_over())

    writer = await ProcessWorkbookWriter.start(EVENT_COLUMNS)  # killed, as by the OOM killer
    await writer.append(ROWS)
    os.kill(writer._process.pid, signal.SIGKILL)
    writer._process.join()
    try:
        await writer.append(ROWS)
    except UserFacingError as error:
        assert str(error) == WORKBOOK_FAILED
    writer.close()
    print("killed", left_over())


anyio.run(main)
"""


def test_workbook_processes_leave_no_temporary_files(short_tmp_path: Path) -> None:
    scratch = short_tmp_path
    done = subprocess.run(
        [sys.executable, "-c", WORKBOOK_PROCESS_SCENARIOS],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["finished []", "abandoned []", "failed []", "killed []"]
    assert list(scratch.iterdir()) == []


def test_main_py_imports_nothing_heavy_at_its_top_level() -> None:
    # Every workbook process re-runs main.py's top level (multiprocessing's __main__ fix-up): keep it cheap.
    probe = "import runpy, sys; runpy.run_path('main.py', run_name='__mp_main__'); print(sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout
    for heavy in ("'uvicorn'", "'ai_credit_usage.runtime.telemetry'", "'openpyxl'", "'mcp'", "'opentelemetry'"):
        assert heavy not in loaded


def test_the_workbook_process_imports_nothing_heavy() -> None:
    # The forkserver preloads workbook_writer once, and every child forks from it: MCP, OpenTelemetry or the
    # settings machinery there would be seconds of start-up and megabytes in each child.
    probe = "import sys, ai_credit_usage.answers.workbook_writer; print(sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for heavy in ("'mcp'", "'opentelemetry'", "'pydantic_settings'", "'httpx2'", "'starlette'"):
        assert heavy not in done.stdout
    assert "'openpyxl'" in done.stdout  # what the preload is for
