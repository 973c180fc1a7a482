"""How OpenMeter's meter reads an event's value: the one rule our event reader and the stand-in both use.

A SUM meter aggregates `ifNotFinite(toFloat64OrNull(JSON_VALUE(data, valueProperty)), null)`
(openmeter/streaming/clickhouse/meter_query.go at 7e57a394; `aggregation.enableDecimalPrecision`, off by default,
reads `toDecimal128OrNull` instead and is not modelled). So a value counts when its text is what ClickHouse's
`toFloat64OrNull` parses in full and the number is finite; anything else counts as nothing.

`toFloat64OrNull` is `tryReadFloatTextFast` (src/IO/readFloatText.h, `readFloatTextFastImpl`; `precise_float_parsing`
is off by default) followed by "the whole string was read" (src/Functions/FunctionsConversion.h, `isAllRead`):

- no blank is skipped anywhere: `" 12"`, `"12 "` and `"1 000"` are no value; nor are `"1_000"`, `"1,5"`, `"0x10"`
  (hex), `"1p3"` (binary exponent) or Unicode digits (only ASCII 0-9 count);
- one optional sign, `-` or `+` (`"+5"` is 5, `"+-5"` and `"--5"` are no value);
- digits, an optional `.` and digits, an optional `e`/`E`, an optional sign and digits; digits may be missing on
  either side of the point, and in the exponent, so `"."`, `"5."`, `".5"`, `"e3"` and `"1e+"` all parse (`"."` and
  `"e3"` as 0), but `"1e"` (nothing after the `e`) and a bare sign do not;
- `inf`, `infinity` and `nan` (any case, signed) parse, but are not finite, so they count as nothing, as do values
  that overflow (`"1e400"`);
- the fast reader keeps the first 19 digits before the point (the rest only scale it, so 22 digits starting with
  zeros are 0), skips the fraction's leading zeros and keeps its next 19 digits, and reads only the first 4 digits
  of the exponent (`"1e00005"` is 1); scaling by more than 10^308 is not finite even for zero (`"0e400"`), and by
  less than 10^-323 is 0 whatever the digits (`shift10`).

Values agree with ClickHouse's to within its fast reader's last-bit rounding (we round correctly).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

_FAST_FLOAT = re.compile(r"([+-]?)([0-9]*)(?:(\.)([0-9]*))?(?:[eE]([+-]?)([0-9]*))?")
_SIGNIFICANT = 19  # std::numeric_limits<UInt64>::digits10
_EXPONENT_DIGITS = 4
_MIN_SHIFT, _MAX_SHIFT = -323, 308  # base/shift10.cpp: below, x * 0; above, x * infinity
_PLAIN_FLOAT = 1e-300  # between this and its inverse, a float's shortest text reads back as the same float
_TEXT_FROM = 10**_SIGNIFICANT  # integers up to 19 digits are read exactly as they are


def to_float64_or_null(text: str) -> float | None:
    """`ifNotFinite(toFloat64OrNull(text), NULL)`: the number ClickHouse reads from `text`, or None."""
    match = _FAST_FLOAT.fullmatch(text)
    if match is None:
        return None
    sign, whole, point, fraction, exponent_sign, exponent_digits = match.groups()
    if len(text) == len(sign):  # nothing after the sign (or nothing at all)
        return None
    if exponent_sign == "" and not exponent_digits:  # an `e` at the very end: "nothing after exponent"
        return None
    scale = max(len(whole) - _SIGNIFICANT, 0)
    if scale > _MAX_SHIFT:  # shift10 multiplies by infinity: inf, or NaN for zeros; neither is finite
        return None
    number = Decimal(int(whole[:_SIGNIFICANT] or "0")).scaleb(scale)
    if point and fraction:
        digits = fraction.lstrip("0")
        zeros = len(fraction) - len(digits)
        kept = digits[:_SIGNIFICANT]
        if kept:
            number += Decimal(int(kept)).scaleb(-(zeros + len(kept)))
    power = int((exponent_digits or "")[:_EXPONENT_DIGITS] or "0") * (-1 if exponent_sign == "-" else 1)
    if power > _MAX_SHIFT:
        return None
    if power < _MIN_SHIFT:  # shift10 multiplies by zero, whatever the digits
        number = Decimal(0)
    elif power:
        number = number.scaleb(power)
    value = float(-number if sign == "-" else number)
    return value if math.isfinite(value) else None


def meter_value(value: Any) -> float | None:
    """A JSON value as a SUM meter counts it: a finite number, or a string `to_float64_or_null` reads; a boolean,
    null, object or list is no value (JSON_VALUE gives `true`, `""` or nothing for them, none of which parse)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if -_TEXT_FROM < value < _TEXT_FROM:
            return float(value)
        try:  # JSON_VALUE hands ClickHouse the digits, which it reads as it reads any text
            return to_float64_or_null(str(value))
        except ValueError:  # more digits than Python converts to text: far beyond a double
            return None
    if isinstance(value, float):
        if value == 0 or _PLAIN_FLOAT < abs(value) < 1 / _PLAIN_FLOAT:
            return value
        # JSON_VALUE hands ClickHouse the number's text, and at the extremes its reader differs (5e-324 is 0).
        return to_float64_or_null(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        return to_float64_or_null(value)
    return None
