"""The real server's edges (issue 15, read in openmeterio/openmeter at 7e57a394): what our client must do so that
the real OpenMeter answers as the stand-in does."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from ai_credit_usage.openmeter.interface import AggregateQuery
from ai_credit_usage.openmeter.numbers import meter_value, to_float64_or_null
from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from ai_credit_usage.openmeter.standin.store import compile_json_path, json_value
from ai_credit_usage.runtime.window import Window
from tests.conftest import AI_METER, ServerStarter, call_tool, download_bytes, text_of, v1_client

JANUARY = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


@pytest.mark.anyio
async def test_a_dimension_asked_twice_is_sent_once(openmeter: OpenMeterStandIn, openmeter_url: str) -> None:
    openmeter.ingest(make_event(tenant="acme", credits=3, time=datetime(2026, 1, 5, tzinfo=UTC), user="ann"))
    client = v1_client(openmeter_url)
    try:
        rows = await client.query(AI_METER, AggregateQuery(JANUARY, ("user", "tenant", "user"), "acme"))
    finally:
        await client.aclose()
    assert [(row.value, row.dimensions) for row in rows] == [(3.0, {"user": "ann", "tenant": "acme"})]
    assert openmeter.requests_to("/query")[-1].params("groupBy") == ["user", "tenant"]


# ---- a credits value is read as the meter reads it (openmeter/numbers.py) ------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12.0),
        ("12.5", 12.5),
        ("-3", -3.0),
        ("+5", 5.0),  # the fast reader takes a leading plus
        ("5.", 5.0),
        (".5", 0.5),
        (".", 0.0),  # "may parse some garbage": a lone point is 0
        ("e3", 0.0),
        ("1e3", 1000.0),
        ("1E-2", 0.01),
        ("1e+", 1.0),  # an exponent sign without digits: exponent 0
        ("1e00005", 1.0),  # only the exponent's first four digits count
        ("0000000000000000000012", 0.0),  # 22 digits: the first 19 (all zeros) scaled by 10**3
        ("0.0000000000000000000000001", 1e-25),  # the fraction's leading zeros are skipped, not counted
        (" 12 ", None),
        (" 12", None),
        ("12 ", None),
        ("\t12", None),
        ("1_000", None),
        ("1,000", None),
        ("1 000", None),
        ("0x10", None),
        ("1p3", None),
        ("١٢", None),  # Arabic-Indic digits: only ASCII digits count
        ("", None),
        ("-", None),
        ("+", None),
        ("+-5", None),
        ("--5", None),
        ("1e", None),
        ("1.2.3", None),
        ("inf", None),  # parsed, but not finite
        ("-Infinity", None),
        ("nan", None),
        ("1e400", None),
        ("0e400", None),  # shift10 past 10^308 multiplies by infinity: NaN for a zero
        ("0" * 330, None),  # 19 zeros scaled by 10^311: the same
        ("5e-400", 0.0),  # shift10 below 10^-323 multiplies by zero
        ("n/a", None),
        ("true", None),
    ],
)
def test_toFloat64OrNull_as_clickhouse_reads_text(text: str, value: float | None) -> None:
    assert to_float64_or_null(text) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12.0),
        (2.5, 2.5),
        (True, None),  # JSON_VALUE gives "true"
        (None, None),
        ({"credits": 1}, None),
        ([1], None),
        (10**400, None),
        (" 12 ", None),
        ("1_000", None),
        ("+7", 7.0),
    ],
)
def test_a_json_value_as_the_meter_counts_it(value: object, expected: float | None) -> None:
    assert meter_value(value) == expected


simple_decimals = st.from_regex(r"\A[+-]?[0-9]{1,19}(\.[0-9]{0,19})?([eE][+-]?[0-9]{1,2})?\Z")
number_like = st.text(alphabet="0123456789+-.eE _x,\t", max_size=14)


@given(simple_decimals)
def test_a_plain_decimal_reads_as_python_reads_it(text: str) -> None:
    expected = float(text)
    assert to_float64_or_null(text) == (expected if math.isfinite(expected) else None)


@given(simple_decimals, st.sampled_from([" ", "\t", "\n", "_", ",", "x"]), st.data())
def test_any_blank_or_separator_makes_it_no_value(text: str, junk: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    assert to_float64_or_null(text[:at] + junk + text[at:]) is None


@given(number_like)
def test_a_value_is_read_only_when_finite_and_only_from_the_number_alphabet(text: str) -> None:
    value = to_float64_or_null(text)
    if value is not None:
        assert math.isfinite(value)
        assert set(text) <= set("0123456789+-.eE")
        assert to_float64_or_null("+" + text.lstrip("+")) == abs(value) or text.startswith("-")


def clickhouse_fast_reader(text: str) -> float | None:
    """An independent, statement-by-statement port of ClickHouse's `readFloatTextFastImpl` (src/IO/readFloatText.h),
    `isAllRead` and `ifNotFinite`, in floats like the C++ (so values agree to a few ulps): the oracle for the rule."""
    n, i, negative = len(text), 0, False

    def shift10(x: float, exponent: int) -> float:  # base/shift10.cpp
        if exponent < -323:
            return x * 0
        if exponent > 308:
            return x * math.inf
        return x * 10.0**exponent

    def digits(i: int, limit: int) -> tuple[int, int]:  # readUIntTextUpToNSignificantDigits<limit>
        value, start = 0, i
        while i < n and i - start < limit and text[i] in "0123456789":
            value, i = value * 10 + int(text[i]), i + 1
        while i < n and text[i] in "0123456789":
            i += 1
        return value, i

    def done(x: float, i: int) -> float | None:
        return x if i == n and math.isfinite(x) else None

    if n == 0:
        return None
    if text[0] == "-":
        negative, i = True, 1
    elif text[0] == "+":
        i = 1
    after_sign = i
    before, j = digits(i, 19)
    read, i = j - i, j
    if read > 19:
        x = shift10(float(before), read - 19)
    else:
        x = float(before)
        if read and (i == n or text[i] < "."):
            return done(-x if negative else x, i)
    after, after_exponent = 0, 0
    if i < n and text[i] == ".":
        i += 1
        start = i
        while i < n and text[i] == "0":
            i += 1
        zeros = i - start
        after, j = digits(i, 19)
        read, i = j - i, j
        after_exponent = (-19 if read > 19 else -read) - zeros
    exponent = 0
    if i < n and text[i] in "eE":
        i += 1
        if i == n:
            return None
        exponent_negative = text[i] == "-"
        if text[i] in "+-":
            i += 1
        exponent, i = digits(i, 4)
        exponent = -exponent if exponent_negative else exponent
    if after:
        x += shift10(float(after), after_exponent)
    if exponent:
        x = shift10(x, exponent)
    if negative:
        x = -x
    if i == after_sign:  # nothing but a sign so far: only inf or nan may follow, and neither is finite
        return None
    return done(x, i)


@given(st.one_of(number_like, simple_decimals, st.text(max_size=10)))
def test_the_rule_agrees_with_a_port_of_clickhouses_reader(text: str) -> None:
    ours, theirs = to_float64_or_null(text), clickhouse_fast_reader(text)
    assert (ours is None) == (theirs is None), (text, ours, theirs)
    if ours is not None and theirs is not None:
        assert math.isclose(ours, theirs, rel_tol=1e-14, abs_tol=1e-300), (text, ours, theirs)


@pytest.mark.parametrize("text", ["0" * 330, "0e400", "5e-400", "1" + "0" * 400, "." + "0" * 330 + "1", "1e-0"])
def test_the_port_and_the_rule_agree_at_the_limits_of_shift10(text: str) -> None:
    ours, theirs = to_float64_or_null(text), clickhouse_fast_reader(text)
    assert ours == theirs or (ours is not None and theirs is not None and math.isclose(ours, theirs, abs_tol=1e-300))


json_values = st.one_of(
    number_like,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.booleans(),
    st.none(),
)


@given(st.lists(json_values, max_size=8))
@settings(deadline=None)
def test_our_reader_and_the_stand_ins_meter_count_the_same(values: list[object]) -> None:
    """What `Meter.credits` reads from an event is what the stand-in's meter (as ClickHouse) sums for it."""
    events = [{"credits": value} for value in values]
    ours = [AI_METER.credits(data) for data in events]
    theirs = [to_float64_or_null(json_value(data, compile_json_path("$.credits"))) for data in events]
    assert ours == theirs


@pytest.mark.anyio
async def test_the_events_sum_equals_the_meters_total(server_url: str, openmeter: OpenMeterStandIn) -> None:
    """Values only the meter's reading can sort out: the events answer counts exactly what the total counts."""
    day = datetime(2026, 1, 15, tzinfo=UTC)
    values: list[object] = [" 12 ", "1_000", "+5", "1e00005", ".5", "0x10", "7", 2.25, "inf", True]
    openmeter.ingest(
        *[make_event(tenant="acme", credits=value, time=day + timedelta(minutes=i)) for i, value in enumerate(values)]
    )
    window = {"from_date": "2026-01-15", "to_date": "2026-01-15"}
    total = text_of(await call_tool(server_url, "get_credit_usage_by_tenant", window))
    events = text_of(await call_tool(server_url, "get_credit_events", window))
    assert "Total credits: 15.75" in total  # 5 + 1 + 0.5 + 7 + 2.25
    assert "Total credits: 15.75" in events


# ---- the meter's eventFrom -----------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("event_from", "expected"), [("2026-01-15T12:00:00Z", "7.00"), ("2026-01-17T00:00:00Z", "0.00")]
)
async def test_the_events_answer_skips_what_the_meter_skips_before_its_event_from(
    start_server: ServerStarter, openmeter: OpenMeterStandIn, event_from: str, expected: str
) -> None:
    """The meter counts nothing before its `eventFrom` (meter_query.go `from()`); the events API still lists it."""
    openmeter.add_meter({**AI_CREDITS_METER, "slug": "ai_credits_late", "eventFrom": event_from})
    day = datetime(2026, 1, 15, tzinfo=UTC)
    openmeter.ingest(
        make_event(tenant="acme", credits=100, time=day + timedelta(hours=11, minutes=59, seconds=59), user="early"),
        make_event(tenant="acme", credits=4, time=day + timedelta(hours=12), user="on_time"),
        make_event(tenant="acme", credits=3, time=day + timedelta(hours=20), user="late"),
    )
    url = start_server(openmeter_meter="ai_credits_late")
    window = {"from_date": "2026-01-15", "to_date": "2026-01-15"}
    total = text_of(await call_tool(url, "get_credit_usage_by_tenant", window))
    events = text_of(await call_tool(url, "get_credit_events", window))
    assert f"Total credits: {expected}" in total
    assert f"Total credits: {expected}" in events
    assert "early" not in events
    about = dict(load_workbook(io.BytesIO(download_bytes(url, events)))["About"].iter_rows(values_only=True))
    assert about["counted from"] == f"{event_from}: the meter counts no earlier event"


def test_a_meter_counts_from_its_event_from() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    window = Window(start, end)
    at = datetime(2026, 1, 10, tzinfo=UTC)
    assert AI_METER.counted(window) == window
    assert replace(AI_METER, events_from=start - timedelta(days=1)).counted(window) == window
    assert replace(AI_METER, events_from=at).counted(window) == Window(at, end)
    assert replace(AI_METER, events_from=end).counted(window) is None
