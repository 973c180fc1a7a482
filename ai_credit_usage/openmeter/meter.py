"""The AI-credits meter as OpenMeter defines it, and reading an event's fields through the meter's JSONPaths.

OpenMeter evaluates `valueProperty` and `groupBy` with ClickHouse `JSON_VALUE`, so the paths in use are simple
member and index chains (`$.credits`, `$.usage.tenant`, `$['tenant']`, `$.items[0].user`). We compile exactly
that subset once and refuse anything else at query time rather than guess.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ai_credit_usage.openmeter.numbers import meter_value
from ai_credit_usage.runtime.errors import UserFacingError
from ai_credit_usage.runtime.window import Window

logger = logging.getLogger(__name__)

DIMENSIONS = ("tenant", "user", "module", "product", "skill")
JsonPath = tuple[str | int, ...]
_warned_missing: set[tuple[str, str]] = set()  # warn once per process, not on every call
_STEP = re.compile(r"""\.([A-Za-z_][\w-]*)|\[(\d+)\]|\['([^']*)'\]|\["([^"]*)"\]""")


class MeterConfigError(UserFacingError):
    """The meter's definition does not let us answer safely; the operator has to fix the meter or the settings."""


def compile_jsonpath(path: str) -> JsonPath:
    """`$.a.b[0]['c d']` -> ("a", "b", 0, "c d"); ValueError for anything outside that subset."""
    if not path.startswith("$"):
        raise ValueError(f"unsupported JSONPath {path!r}")
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise ValueError(f"unsupported JSONPath {path!r}")
        name, index, single, double = match.groups()
        steps.append(int(index) if index is not None else next(s for s in (name, single, double) if s is not None))
        position = match.end()
    return tuple(steps)


def extract(data: Any, path: JsonPath) -> Any:
    """The value at `path` in `data`, or None when any step is missing."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(data, list) or step >= len(data):
                return None
            data = data[step]
        elif isinstance(data, dict):
            data = data.get(step)
        else:
            return None
    return data


def dimension_text(value: Any) -> str:
    """A dimension as OpenMeter groups it: strings as they are, other scalars as JSON text, missing as ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Meter:
    """The AI-credits meter: its key (`slug`), the id the API addresses it by, and where an event holds what.

    `events_from` is the meter's `eventFrom` (v1) / `events_from` (v3): the meter counts no event before it, while
    the events API still lists them, so the events walk starts there too (`counted`)."""

    slug: str
    event_type: str
    value_path: JsonPath
    dimension_paths: dict[str, JsonPath]
    id: str = ""
    events_from: datetime | None = None  # the meter ignores earlier events (v1 `eventFrom`, v3 `events_from`)

    @classmethod
    def build(
        cls,
        *,
        key: str,
        aggregation: str,
        event_type: str,
        value_property: str | None,
        dimensions: Mapping[str, str] | None,
        id: str | None = None,
        events_from: datetime | None = None,
    ) -> Meter:
        """A meter from its definition (either API's spelling, already read); one we cannot scope is refused."""
        if aggregation.upper() != "SUM":
            raise MeterConfigError(
                f"The meter '{key}' is not a SUM meter, so it does not hold credit totals; "
                "ask the operator to point OPENMETER_METER at the AI-credits meter."
            )
        group_by = dict(dimensions or {})
        if "tenant" not in group_by:
            raise MeterConfigError(
                f"The meter '{key}' has no tenant dimension, so usage cannot be limited to your tenant; "
                "ask the operator to add 'tenant' to the meter's dimensions (groupBy on the v1 API)."
            )
        try:
            value_path = compile_jsonpath(value_property or "")
            dimension_paths = {name: compile_jsonpath(group_by[name]) for name in DIMENSIONS if name in group_by}
        except ValueError as exc:
            raise MeterConfigError(
                f"The meter '{key}' uses a JSONPath this server cannot read ({exc}); ask the operator to check it."
            ) from None
        for name in DIMENSIONS:
            if name not in dimension_paths and (key, name) not in _warned_missing:
                _warned_missing.add((key, name))
                logger.warning("meter %s has no %r dimension; that column stays empty", key, name)
        return cls(
            slug=key,
            event_type=event_type,
            value_path=value_path,
            dimension_paths=dimension_paths,
            id=id or key,
            events_from=events_from,
        )

    def counted(self, window: Window) -> Window | None:
        """The part of `window` the meter counts events in (from `events_from` on); None when that part is empty."""
        if self.events_from is None or self.events_from <= window.start:
            return window
        if self.events_from >= window.end:
            return None
        return Window(self.events_from, window.end)

    def dimension(self, data: Any, name: str) -> str:
        path = self.dimension_paths.get(name)
        return "" if path is None else dimension_text(extract(data, path))

    def credits(self, data: Any) -> float | None:
        return meter_value(extract(data, self.value_path))
