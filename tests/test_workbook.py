from __future__ import annotations

import io
from datetime import UTC, datetime

from openpyxl import load_workbook

from ai_credit_usage.table import Table
from ai_credit_usage.usage import EVENT_COLUMNS
from ai_credit_usage.workbook import ABOUT_SHEET, DATA_SHEET, SUMMARY_SHEET, build_workbook


def test_rows_types_and_formula_guard() -> None:
    hostile = ['=HYPERLINK("http://evil","x")', "+1+1", "-2", "@SUM(A1)", "plain", "bell\x07char"]
    rows = [
        (datetime(2026, 1, 15, 10, i, tzinfo=UTC), text, "chat", "p1", "acme", 0.125 * i)
        for i, text in enumerate(hostile)
    ]
    content = build_workbook(Table(EVENT_COLUMNS, rows), about=[("tenant", "acme"), ("note", "=1+1")])

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
    content = build_workbook(Table(("tenant", "credits"), []), about=[])
    sheet = load_workbook(io.BytesIO(content))[DATA_SHEET]
    assert list(sheet.iter_rows(values_only=True)) == [("tenant", "credits")]
