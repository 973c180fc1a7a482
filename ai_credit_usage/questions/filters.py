"""A call's filters: the user, module, product or skill an answer is narrowed to, parsed once with the query, and
the closest existing values when a filter matched nothing.                                                  (pure)

A filter is data, never an operator, a list or a pattern: it is compared for equality, here and by OpenMeter (one
`$eq`/`eq` per dimension, built as JSON data). Only what no dimension value can be is refused, with one sentence
naming the parameter and the start of the value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ai_credit_usage.runtime.errors import Outcome, UserFacingError, shown

# The dimensions of a usage row besides the tenant, in the tables' order: what a call filters on, a summary or a trend
# groups by, and an answer names the top 5 of.
Dimension = Literal["user", "module", "product", "skill"]
DIMENSIONS: tuple[Dimension, ...] = ("user", "module", "product", "skill")
# The longest value accepted, in UTF-8 bytes. Every filter of a call then fits in one v1 query string (a byte is at
# most three once percent-encoded) far below the request-line limit proxies enforce; no real name is this long.
MAX_FILTER_BYTES = 256
QUOTED_CHARS = 40  # how much of a value a sentence names back
NEAREST_COUNT = 5
_COMPARED_CHARS = 64  # the edit distance looks at this many characters: enough to rank names, cheap on long ones
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class FilterError(UserFacingError):
    """A filter value the caller can fix; the message names the parameter."""

    outcome: Outcome = "invalid"


@dataclass(frozen=True)
class Filters:
    """Each dimension's exact value, or None for all of them; several narrow together (AND)."""

    user: str | None = None
    module: str | None = None
    product: str | None = None
    skill: str | None = None

    @functools.cached_property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The filters set, as (dimension, value) in the dimensions' order; worked out once, as the event walk asks
        for every event."""
        return tuple((name, value) for name in DIMENSIONS if (value := getattr(self, name)) is not None)

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def matches(self, value_of: Callable[[str], str]) -> bool:
        """Whether a row or event, whose dimension values `value_of` reads, is one the filters keep."""
        return all(value_of(name) == value for name, value in self.pairs)

    def as_dict(self) -> dict[str, str]:
        return dict(self.pairs)


NO_FILTERS = Filters()


def quoted(value: str, limit: int = QUOTED_CHARS) -> str:
    """A value named back in a sentence: quoted, only its start when it is long."""
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def parse_filters(arguments: Mapping[str, Any]) -> Filters:
    """Trimmed of surrounding blanks (as the tenant header is); a blank value is no filter."""
    found: dict[str, str] = {}
    for name in DIMENSIONS:
        value = arguments.get(name)
        if value is None:
            continue
        if not isinstance(value, str):  # the gate refuses these first; kept so no caller can pass an operator
            raise FilterError(f"{name} must be text such as a name (or left out); {shown(value)} is not.")
        value = value.strip()
        if not value:
            continue
        if _CONTROL.search(value):
            raise FilterError(
                f"{name} {quoted(value)} contains a control character, which no {name} name has; give the name as "
                "it appears in the usage (or leave it out)."
            )
        if len(value.encode()) > MAX_FILTER_BYTES:
            raise FilterError(
                f"{name} {quoted(value)} is {len(value):,} characters long, longer than any {name} name can be "
                f"({MAX_FILTER_BYTES} bytes); give the name as it appears in the usage (or leave it out)."
            )
        found[name] = value
    return Filters(**found)


def nearest(value: str, candidates: Iterable[str], count: int = NEAREST_COUNT) -> list[str]:
    """Up to `count` candidates closest to `value`: equal ignoring case, then a prefix, then a substring (either way,
    ignoring case), then the rest; by edit distance within each. No cut-off: a value like nothing known still gets
    the closest names, so the model can ask again."""
    wanted = value.casefold()

    def rank(candidate: str) -> tuple[int, int, str]:
        folded = candidate.casefold()
        if folded == wanted:
            kind = 0
        elif folded.startswith(wanted) or wanted.startswith(folded):
            kind = 1
        elif wanted in folded or folded in wanted:
            kind = 2
        else:
            kind = 3
        return kind, edit_distance(wanted[:_COMPARED_CHARS], folded[:_COMPARED_CHARS]), candidate

    return sorted({name for name in candidates if name and name != value}, key=rank)[:count]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of one character each."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class NoMatch:
    """A filtered question that found no usage: which filter matched nothing (None: each matched on its own, not
    all together) and the closest values of that dimension that have usage in the window, inside the tenant."""

    filters: Filters
    start: str  # the window, as the answer's first line gives it (UTC)
    end: str
    dimension: str | None
    value: str | None
    closest: tuple[str, ...] = ()

    def sentence(self) -> str:
        when = f"from {self.start} to {self.end}"
        if self.dimension is None or self.value is None:
            asked = " with ".join(f"{name} {quoted(value)}" for name, value in self.filters.pairs)
            return f"No usage for {asked} {when}; each has usage then, but not together."
        head = f"No usage for {self.dimension} {quoted(self.value)} {when}"
        if not self.closest:
            return f"{head}; no {self.dimension} has usage in this tenant then."
        named = ", ".join(_named(name) for name in self.closest)
        return f"{head}; {self.dimension}s with usage then include {named}."


def _named(name: str) -> str:
    """A value in a list, as it is unless the list would blur it (a comma, blanks at an end): then quoted. Cut at
    the length a filter can have: a dimension value may be far longer, and the answer's text has a budget."""
    if "," in name or name != name.strip() or "'" in name:
        return quoted(name, limit=MAX_FILTER_BYTES)
    return name if len(name) <= MAX_FILTER_BYTES else name[: MAX_FILTER_BYTES - 1] + "…"


def no_match(filters: Filters, start: str, end: str, known: Mapping[str, Iterable[str]]) -> NoMatch:
    """What to say when `filters` matched nothing, from `known`: each filtered dimension's values with usage in the
    window, without the filters (the tenant's own, nothing else)."""
    for name, value in filters.pairs:
        values = {found for found in known.get(name, ()) if found}
        if value not in values:
            return NoMatch(filters, start, end, name, value, tuple(nearest(value, values)))
    return NoMatch(filters, start, end, None, None)
