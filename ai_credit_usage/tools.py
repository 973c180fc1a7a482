"""The tools, one declaration each: name, title, description, parameters, the question it asks, its result model
and its file label. server.py registers them in a loop; adding a tool is a `ToolSpec` here and its question."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ai_credit_usage.answers.structured import (
    BalanceResult,
    EventsResult,
    ForecastResult,
    SummaryResult,
    TenantTotalResult,
    TrendResult,
)
from ai_credit_usage.answers.views import BALANCE, FORECAST, SUMMARY, TREND, View
from ai_credit_usage.questions.filters import Dimension
from ai_credit_usage.questions.findings import Findings
from ai_credit_usage.questions.forecast import LOOKBACK_DAYS
from ai_credit_usage.questions.query import Query, parse_forecast_query, parse_moment_query, parse_query
from ai_credit_usage.questions.sink import TableSink
from ai_credit_usage.questions.trend import Granularity
from ai_credit_usage.questions.usage import UsageService
from ai_credit_usage.runtime.settings import Settings

# A UsageService method: the tenant comes from the caller, the rest from the parsed arguments.
Question = Callable[[UsageService, str, Query, TableSink], Awaitable[Findings]]
Parser = Callable[[Mapping[str, Any], datetime], Query]

FromDate = Annotated[
    str | None,
    Field(
        description="Start of the window, inclusive, ISO 8601: 2026-01-01, 2026-01-01T00:00:00Z or "
        "2026-01-01T00:00:00+02:00 (no offset means UTC). Default: 7 days before to_date."
    ),
]
ToDate = Annotated[
    str | None,
    Field(
        description="End of the window, ISO 8601. A date alone includes that whole day (January: from_date "
        "2026-01-01, to_date 2026-01-31); a timestamp is exclusive. Default: now."
    ),
]
GranularityParameter = Annotated[
    Granularity | None,
    Field(
        description="Length of one period. Default from the window: up to 45 days daily, up to 26 weeks weekly, "
        "else monthly. Weeks start on Monday."
    ),
]
GroupByParameter = Annotated[
    Dimension | None,
    Field(description="Split each period by this dimension (the top 5, the rest as Other). Default: the total only."),
]
BreakdownParameter = Annotated[
    list[Dimension] | None,
    Field(
        description='One row per combination of these dimensions, e.g. ["module"] for "which module costs the most?". '
        "Default: all four."
    ),
]


def _filter(dimension: str, example: str) -> Any:
    return Annotated[
        str | None,
        Field(
            description=f"Only this {dimension}'s usage, exact and case-sensitive ({example}). "
            f"Default: every {dimension}."
        ),
    ]


# Every usage tool and the forecast narrow to these; a spec adds them to its own parameters.
FILTER_PARAMETERS: tuple[tuple[str, Any], ...] = (
    ("user", _filter("user", "alice@acme.example")),
    ("module", _filter("module", "as the summary names it")),
    ("product", _filter("product", "as the summary names it")),
    ("skill", _filter("skill", "as the summary names it")),
)
TimeZoneParameter = Annotated[
    str | None,
    Field(
        description="IANA time zone name (e.g. Europe/Paris) for the period boundaries, and for from_date/to_date "
        "given without an offset. Default: UTC."
    ),
]
ForecastTimeZone = Annotated[
    str | None,
    Field(description="IANA time zone name (e.g. Europe/Paris) for the calendar month and its days. Default: UTC."),
]
ForecastToDate = Annotated[
    str | None,
    Field(
        description="Last day of the forecast, inclusive, as a date (2026-06-30), today or later and at most a year "
        "ahead. Default: the last day of the current month (in time_zone)."
    ),
]


def always(settings: Settings) -> bool:
    return True


def credits_configured(settings: Settings) -> bool:
    """The balance is offered when the credits feature is set, on both APIs: v1 reads the entitlement, v3 (Kong
    Konnect) the entitlement value where served, else the prepaid credits ledger (docs/credits.md)."""
    return settings.openmeter_credits_feature is not None


# Every usage tool takes these two; a spec lists only what it takes besides.
WINDOW_PARAMETERS: tuple[tuple[str, Any], ...] = (("from_date", FromDate), ("to_date", ToDate))


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    question: Question  # (service, tenant, query, sink) -> Findings: rows in the sink, what it found besides
    result: type[BaseModel]  # the structured result, published as the tool's output schema
    file_label: str  # names the workbook: ai-credits_<label>_<tenant>_<window>.xlsx
    parameters: tuple[tuple[str, Any], ...] = ()  # (name, annotated type), beyond the window's
    window_parameters: tuple[tuple[str, Any], ...] = WINDOW_PARAMETERS  # how the window is asked for
    parse: Parser = parse_query  # the arguments as a Query
    # Whether this server offers the tool at all (in tools/list and callable): a tool that can only fail under these
    # settings is not offered, so the model never picks it.
    offered: Callable[[Settings], bool] = always
    # What the server instructions add when the tool is offered: when to pick it.
    pick: str = ""
    # The inline chart (MCP Apps) a host shows beside the answer: named in the tool's `_meta.ui.resourceUri`.
    view: View | None = None

    @property
    def all_parameters(self) -> tuple[tuple[str, Any], ...]:
        return self.window_parameters + self.parameters


INSTRUCTIONS = """\
Answers a tenant administrator's questions about their own tenant's AI credit usage, read from OpenMeter.
Pick the tool by the question: totals and the change against the previous period -> get_credit_usage_by_tenant;
who or what uses the most (breakdown by user, module, product, skill, and who changed most) ->
get_credit_usage_summary; individual events ("what happened on Jan 15th?") -> get_credit_events; usage over time
("is it going up?", per day, week or month, unusual periods) -> get_credit_usage_trend; how much will be used by
the end of the month or by a later day ("what will we have used by month-end?", a projection with ranges) ->
get_credit_forecast, never an extrapolation of your own from the usage tools. The usage tools take from_date and
to_date (ISO 8601, both optional; default: the last 7 days), the trend tool also granularity, group_by and
time_zone; the forecast takes to_date (a day ahead) and time_zone. For one user, module, product or skill pass it as
a filter (user, module, product, skill: exact names) instead of adding up table rows: "How much did alice use last
month?" -> get_credit_usage_by_tenant with user; "Which module costs the most?" -> get_credit_usage_summary with
group_by ["module"]. Every summary names the top 5 users, modules, products and skills exactly. Every tool always
answers for the caller's own tenant. Each answer has a short table and a link to the full Excel report, which
expires after a few minutes: give the user the link as it is."""

# Added to INSTRUCTIONS only when the balance is offered, so the model is never told of a tool it cannot call.
BALANCE_PICK = (
    " How much is left, when the allowance resets and when it runs out at the current pace ('How many credits do we "
    "have left?', 'When do we run out?', 'When does it reset?') -> get_credit_balance (no arguments)."
)


def instructions(settings: Settings) -> str:
    """The server instructions: the usage tools, and what each further offered tool adds."""
    return INSTRUCTIONS + "".join(spec.pick for spec in TOOLS if spec.pick and spec.offered(settings))


WINDOW_HELP = (
    " The window defaults to the last 7 days; a date-only to_date includes that whole day. The answer names the "
    "window, shows a table of at most 50 rows and the total, and links an Excel file with every row."
)

TOOLS = (
    ToolSpec(
        name="get_credit_usage_by_tenant",
        title="AI credits used by my tenant",
        description=(
            'Total AI credits the caller\'s tenant used in a time window: "How many credits did we use this month?", '
            '"Compared to last month?". One row (tenant, credits), and the change against the preceding window of '
            "the same length. For who or what used them use get_credit_usage_summary; over time, "
            "get_credit_usage_trend; for individual events, get_credit_events. With user, module, product or skill, "
            'the total of just that one: "How much did alice use last month?".' + WINDOW_HELP
        ),
        question=UsageService.tenant_total,
        result=TenantTotalResult,
        file_label="tenant",
        parameters=FILTER_PARAMETERS,
    ),
    ToolSpec(
        name="get_credit_usage_summary",
        title="AI credit usage breakdown",
        description=(
            "Breakdown of the tenant's AI credits by user, module, product and skill, largest first: \"Who uses the "
            'most?", "Which module costs the most?", "Who changed most since last week?". One row per combination of '
            "the group_by dimensions, the top 5 users, modules, products and skills with exact credits and shares, "
            "and the three users whose credits changed most against the preceding window. Filters narrow it "
            '(module=... with group_by ["user"]: who uses that module). For the plain total use '
            "get_credit_usage_by_tenant; over time, get_credit_usage_trend; for individual events, get_credit_events."
            + WINDOW_HELP
        ),
        question=UsageService.summary,
        result=SummaryResult,
        file_label="summary",
        view=SUMMARY,
        parameters=(("group_by", BreakdownParameter), *FILTER_PARAMETERS),
    ),
    ToolSpec(
        name="get_credit_events",
        title="AI credit events",
        description=(
            "Individual AI-credit events of the tenant, newest first: time (UTC), user, module, product, credits. "
            'For "What happened on January 15th?" use from_date=to_date=2026-01-15. Prefer short windows; for '
            "totals or breakdowns use get_credit_usage_by_tenant or get_credit_usage_summary." + WINDOW_HELP
        ),
        question=UsageService.events,
        result=EventsResult,
        file_label="events",
        parameters=FILTER_PARAMETERS,
    ),
    ToolSpec(
        name="get_credit_usage_trend",
        title="AI credit usage over time",
        description=(
            'The tenant\'s AI credits over time: "Is our usage going up?", "Credits per week this quarter", "Which '
            'module grew in March?", "Anything unusual this month?". One row per day, week or month, with 0 where '
            "nothing was used; periods the window cuts are marked partial. With group_by, one column per user, "
            "module, product or skill (the top 5, the rest as Other). The answer names unusual periods (far above "
            "the typical one). For totals or breakdowns of the whole window use get_credit_usage_by_tenant or "
            "get_credit_usage_summary." + WINDOW_HELP
        ),
        question=UsageService.trend,
        result=TrendResult,
        file_label="trend",
        view=TREND,
        parameters=(
            ("granularity", GranularityParameter),
            ("group_by", GroupByParameter),
            ("time_zone", TimeZoneParameter),
            *FILTER_PARAMETERS,
        ),
    ),
    ToolSpec(
        name="get_credit_forecast",
        title="AI credit forecast",
        description=(
            'How many AI credits the tenant will have used by the end of the month (or by to_date): "What will we '
            'have used by the end of the month?", "At this pace, how much by June 30th?". Used so far since the '
            "month began, the projected total at the end with 80% and 95% intervals, and one row per day (used, "
            "forecast, cumulative with its intervals). The projection learns a weekday rhythm and the recent level "
            f"from the last {LOOKBACK_DAYS // 7} weeks of the tenant's own usage; with too little history the answer "
            "says so; with a filter, the projection is that user's (module's, ...) alone. For usage already recorded "
            "use get_credit_usage_by_tenant or get_credit_usage_trend; for what is left or when it runs out, "
            "get_credit_balance when it is offered. The answer links an Excel file with every day and a chart."
        ),
        question=UsageService.forecast,
        result=ForecastResult,
        file_label="forecast",
        view=FORECAST,
        parameters=(("time_zone", ForecastTimeZone), *FILTER_PARAMETERS),
        window_parameters=(("to_date", ForecastToDate),),
        parse=parse_forecast_query,
    ),
    ToolSpec(
        name="get_credit_balance",
        title="AI credits left",
        description=(
            "How many AI credits the caller's tenant has left, and how long they last: \"How many credits do we "
            'have left?", "When does our allowance reset?", "At this rate, when do we run out?". From the tenant\'s '
            "credit allowance in OpenMeter (on Kong Konnect: its prepaid credits): the balance now, this period's "
            "usage and when the period resets, each grant with what is left of it (where OpenMeter keeps it) and when "
            "it expires, overage, and the runway (when the balance runs out "
            "at the recent pace, as a range, and whether that is before the reset or a grant's expiry). Takes no "
            "arguments. For credits used in a window use get_credit_usage_by_tenant; over time, "
            "get_credit_usage_trend. The answer links an Excel file with every grant and the daily usage."
        ),
        question=UsageService.balance_left,
        result=BalanceResult,
        file_label="balance",
        view=BALANCE,
        offered=credits_configured,
        pick=BALANCE_PICK,
        window_parameters=(),
        parse=parse_moment_query,
    ),
)
