"""The structured result beside each answer's markdown: one pydantic model per tool, published as its outputSchema.

It carries what the text says, as data: the window, the totals, the preview rows as objects, the link and its
expiry, and what the tool found besides (comparison, movers, periods, unusual periods). Strings are shortened
exactly where the text shortens them, so an app never gets a bigger preview than the model does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ai_credit_usage.answers.render import Preview, period_text, shorten_plain
from ai_credit_usage.questions.balance import CreditBalance
from ai_credit_usage.questions.compare import Comparison, Mover, MoverStatus
from ai_credit_usage.questions.filters import NO_FILTERS, Dimension, Filters, NoMatch
from ai_credit_usage.questions.findings import Findings
from ai_credit_usage.questions.sink import PREVIEW_ROWS, TableSink
from ai_credit_usage.questions.trend import MAD_LIMIT, MIN_TIMES_TYPICAL, Granularity
from ai_credit_usage.runtime.window import Window

UNUSUAL_KEPT = 50
# Credits in every structured result: rounded to this many decimals, far below a cent and far above a float's noise,
# so the same sum never shows as 3952.188399999999 in one tool and 3952.1884 in another.
CREDIT_DECIMALS = 6


def exact_credits(value: float) -> float:
    """The one rounding of credits every tool's structured result goes through (a -0.0 comes out as 0.0)."""
    return round(value, CREDIT_DECIMALS) + 0.0


Credits = Annotated[float, AfterValidator(exact_credits)]
BALANCE_NAME_LIMIT = 80  # as balance_report.NAME_LIMIT cuts names in the text


@dataclass(frozen=True)
class Answered:
    """What a structured result is built from: the sink's rows and totals, the findings, and the answer around them."""

    sink: TableSink
    findings: Findings
    tenant: str
    window: Window
    download_url: str
    expires_at: datetime
    preview: Preview
    demo: bool
    filters: Filters = NO_FILTERS

    def text(self, value: Any) -> Any:
        """Strings shortened exactly where the preview text shortens them."""
        return shorten_plain(value, self.preview.cell_limit) if isinstance(value, str) else value

    def rows_as(self, model: type[BaseModel]) -> list[Any]:
        columns = self.sink.columns
        return [model(**dict(zip(columns, map(self.text, row), strict=True))) for row in self.preview.shown.rows]


class WindowOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: datetime = Field(alias="from", description="Start of the window, inclusive, UTC.")
    end: datetime = Field(alias="to", description="End of the window, exclusive, UTC.")

    @classmethod
    def of(cls, window: Window) -> WindowOut:
        return cls(start=window.start, end=window.end)


class ComparisonOut(BaseModel):
    previous_window: WindowOut = Field(description="The preceding window of the same length, ending at this start.")
    previous_credits: Credits
    change_credits: Credits = Field(description="This window's total minus the previous window's.")
    change_percent: float | None = Field(description="Null when the previous window had no usage.")

    @classmethod
    def of(cls, comparison: Comparison) -> ComparisonOut:
        return cls(
            previous_window=WindowOut.of(comparison.previous_window),
            previous_credits=comparison.previous,
            change_credits=comparison.change,
            change_percent=comparison.percent,
        )


class UsageResult(BaseModel):
    """What every tool returns beside its markdown; each tool's result adds its `rows` (and what else it found)."""

    tenant: str
    window: WindowOut
    total_credits: Credits = Field(
        description=f"Credits over every row, as OpenMeter summed them ({CREDIT_DECIMALS} decimals; the text 2)."
    )
    row_count: int = Field(description="Rows in the Excel file's Data sheet.")
    columns: list[str] = Field(description="The table's columns, in order.")
    truncated: bool = Field(
        description="True when `rows` shows only 50 of `row_count` rows (the first 50; a trend's newest 50 periods)."
    )
    credits_not_shown: Credits = Field(description="Credits of the rows not in `rows`; with them they make the total.")
    cells_shortened: bool = Field(description="Some long text was cut with an ellipsis (never in the Excel file).")
    download_url: str = Field(description="The Excel file with every row, a Summary and an About sheet.")
    expires_at: datetime = Field(description="When the download link stops working.")
    comparison: ComparisonOut | None = Field(
        description="Against the preceding window of the same length; null when that could not be read."
    )
    demo: bool = Field(description="True when the server answers from generated demo data, not real usage.")
    filters: dict[str, str] = Field(
        description="What the answer is narrowed to: user, module, product or skill and its exact value; {} for none."
    )
    no_match: NoMatchOut | None = Field(
        description="Set when the filters matched no usage in the window: which value, and the closest existing ones."
    )

    @classmethod
    def of(cls, answer: Answered) -> Self:
        findings, preview, limit = answer.findings, answer.preview, answer.preview.cell_limit
        return cls(
            tenant=shorten_plain(answer.tenant, limit),
            window=WindowOut.of(answer.window),
            total_credits=answer.sink.total_credits,
            row_count=answer.sink.row_count,
            columns=[shorten_plain(name, limit) for name in answer.sink.columns],
            truncated=preview.shown.hidden > 0,
            credits_not_shown=preview.shown.hidden_credits,
            cells_shortened=preview.shortened,
            download_url=answer.download_url,
            expires_at=answer.expires_at,
            comparison=ComparisonOut.of(findings.comparison) if findings.comparison is not None else None,
            demo=answer.demo,
            filters=answer.filters.as_dict(),
            no_match=NoMatchOut.of(findings.no_match) if findings.no_match is not None else None,
            **cls.details(answer),
        )

    @classmethod
    def details(cls, answer: Answered) -> dict[str, Any]:
        """The tool's own fields: its rows, as its row model, and what else it found."""
        return {"rows": answer.rows_as(cls.row_model)}

    row_model: ClassVar[type[BaseModel]]


class NoMatchOut(BaseModel):
    message: str = Field(description="The sentence the answer's text gives.")
    dimension: str | None = Field(description="The filter that matched nothing; null when only all together did not.")
    value: str | None
    closest: list[str] = Field(description="Up to 5 values of that dimension with usage in the window, closest first.")

    @classmethod
    def of(cls, found: NoMatch) -> NoMatchOut:
        return cls(message=found.sentence(), dimension=found.dimension, value=found.value, closest=list(found.closest))


class TopOut(BaseModel):
    name: str
    credits: Credits
    share: float | None = Field(description="Of the total credits, 0 to 1; null when the total is 0.")


def tops_of(answer: Answered) -> dict[str, list[TopOut]]:
    """The top 5 of every dimension the answer knows, over all rows, names shortened as the text shortens them."""
    return {
        dimension: [TopOut(name=answer.text(name), credits=credits, share=share) for name, credits, share in top]
        for dimension, top in answer.sink.tops().items()
    }


class TenantRow(BaseModel):
    tenant: str
    credits: Credits


class TenantTotalResult(UsageResult):
    row_model: ClassVar[type[BaseModel]] = TenantRow
    rows: list[TenantRow]


class SummaryRow(BaseModel):
    """A dimension the breakdown leaves out (group_by) is null."""

    user: str | None = None
    module: str | None = None
    product: str | None = None
    tenant: str
    skill: str | None = None
    credits: Credits


class MoverOut(BaseModel):
    user: str
    status: MoverStatus
    credits: Credits
    previous_credits: Credits
    change_credits: Credits
    change_percent: float | None = Field(description="Null for new and gone users.")

    @classmethod
    def of(cls, mover: Mover, limit: int) -> MoverOut:
        return cls(
            user=shorten_plain(mover.name, limit),
            status=mover.status,
            credits=mover.current,
            previous_credits=mover.previous,
            change_credits=mover.change,
            change_percent=mover.percent,
        )


class SummaryResult(UsageResult):
    row_model: ClassVar[type[BaseModel]] = SummaryRow
    rows: list[SummaryRow]
    movers: list[MoverOut] | None = Field(
        description="The three users whose credits changed most against the preceding window; null if unknown."
    )
    tops: dict[str, list[TopOut]] = Field(
        description="The top 5 users, modules, products and skills over all rows, with credits and share."
    )

    @classmethod
    def details(cls, answer: Answered) -> dict[str, Any]:
        movers, limit = answer.findings.movers, answer.preview.cell_limit
        return {
            **super().details(answer),
            "tops": tops_of(answer),
            "movers": None if movers is None else [MoverOut.of(mover, limit) for mover in movers],
        }


class EventRow(BaseModel):
    time: datetime
    user: str
    module: str
    product: str
    tenant: str
    credits: Credits


class EventsResult(UsageResult):
    row_model: ClassVar[type[BaseModel]] = EventRow
    rows: list[EventRow]


class TrendPeriodOut(BaseModel):
    period: str = Field(description="The period's first local day (a month as YYYY-MM).")
    start: datetime = Field(description="Start of the period, UTC.")
    end: datetime = Field(description="End of the period, exclusive, UTC.")
    partial: bool = Field(description="The window covers only part of the period.")
    credits: Credits = Field(description="The period's total; with group_by, exactly the sum of `series_credits`.")
    series_credits: list[Credits] = Field(description="Credits per series, in the order of `series` (or empty).")


class UnusualOut(BaseModel):
    period: str
    credits: Credits
    times_typical: float = Field(description="Credits over `typical_credits`.")


class TrendResult(UsageResult):
    granularity: Granularity
    time_zone: str
    group_by: Dimension | None
    series: list[str] = Field(description="The top 5 series, then Other for the rest; empty without group_by.")
    rows: list[TrendPeriodOut] = Field(description="The periods, oldest first; with more than 50, the newest 50.")
    typical_credits: Credits | None = Field(
        description="The typical period: the median complete period, or, when that had no usage, the median complete "
        "period with usage (see `typical_basis`); null when too few periods to judge."
    )
    typical_basis: Literal["complete periods", "complete periods with usage"] | None = Field(
        description="Which periods `typical_credits` and `deviation_credits` are taken over; null when not judged."
    )
    deviation_credits: Credits | None = Field(description="The median absolute deviation of those periods.")
    unusual_periods: list[UnusualOut] = Field(
        description=f"More than {MAD_LIMIT} deviations above the typical period and at least {MIN_TIMES_TYPICAL:g} "
        "times it, largest first."
    )

    @classmethod
    def details(cls, answer: Answered) -> dict[str, Any]:
        trend = answer.findings.trend
        if trend is None:  # pragma: no cover - the trend question always finds one
            raise ValueError("a trend result needs a trend")

        def label(day: date) -> str:
            return period_text(day, trend.granularity)

        periods = list(zip(trend.periods, trend.values, trend.totals, strict=True))[answer.preview.shown.hidden :]
        typical_basis = "complete periods with usage" if trend.typical_with_usage else "complete periods"
        return {
            "granularity": trend.granularity,
            "time_zone": trend.time_zone,
            "group_by": trend.group_by,
            "series": [shorten_plain(name, answer.preview.cell_limit) for name in trend.series],
            "rows": [
                TrendPeriodOut(
                    period=label(period.label),
                    start=period.start,
                    end=period.end,
                    partial=period.partial,
                    credits=total,
                    series_credits=values,
                )
                for period, values, total in periods
            ],
            "typical_credits": trend.typical,
            "typical_basis": typical_basis if trend.judged else None,
            "deviation_credits": trend.deviation,
            "unusual_periods": [
                UnusualOut(
                    period=label(trend.periods[found.index].label),
                    credits=found.credits,
                    times_typical=found.times_typical,
                )
                for found in trend.unusual[:UNUSUAL_KEPT]
            ],
        }


class IntervalOut(BaseModel):
    low: Credits
    high: Credits

    @classmethod
    def of(cls, bounds: tuple[float, float]) -> IntervalOut:
        return cls(low=bounds[0], high=bounds[1])


class ForecastDayOut(BaseModel):
    day: date = Field(description="A calendar day in `time_zone`.")
    used: Credits = Field(description="Credits recorded that day (today: so far).")
    forecast: Credits = Field(description="Credits expected that day (today: the rest of it; 0 for past days).")
    credits: Credits = Field(description="`used` + `forecast`.")
    cumulative: Credits = Field(description="Expected credits from the window's start through this day.")
    interval_80: IntervalOut = Field(description="80% interval of `cumulative` (exact for past days).")
    interval_95: IntervalOut = Field(description="95% interval of `cumulative`.")


class BalanceCrossingOut(BaseModel):
    earliest: date | None = Field(description="The fast end of the 80% range; null: it lasts until the reset.")
    likely: date | None = Field(description="At the expected pace; null: it lasts until the reset.")
    latest: date | None = Field(description="The slow end; null: it lasts until the reset.")
    lasts_through: date = Field(description="The last day looked at: the day before the allowance resets.")


class ForecastResult(UsageResult):
    as_of: datetime = Field(description="The moment that splits usage recorded from usage projected, UTC.")
    time_zone: str
    used_so_far: Credits = Field(description="Credits recorded from the window's start until `as_of`.")
    projected_total: Credits = Field(
        description="Credits expected over the whole window: `used_so_far` plus the projected rest."
    )
    interval_80: IntervalOut = Field(description="80% interval of `projected_total`.")
    interval_95: IntervalOut = Field(description="95% interval of `projected_total`.")
    enough_history: bool = Field(
        description="False when the tenant's usage history is too short to trust the projection (the text says so)."
    )
    history_days: int = Field(description="Complete days of usage history the projection learned from.")
    days: list[ForecastDayOut] = Field(
        description="One per day from the window's first day, oldest first: at most 50 (the Excel file has all)."
    )
    balance: Credits | None = Field(
        default=None, description="Credits left now, when a credit allowance is configured (else null)."
    )
    balance_runs_out: BalanceCrossingOut | None = Field(
        default=None,
        description="When the balance runs out at the allowance's own pace (the entitlement's daily usage, up to "
        "its reset); null without a balance.",
    )

    @classmethod
    def details(cls, answer: Answered) -> dict[str, Any]:
        outlook, rows = answer.findings.forecast, answer.preview.shown.rows
        if outlook is None:  # pragma: no cover - the forecast question always finds one
            raise ValueError("a forecast result needs an outlook")
        return {
            "as_of": outlook.as_of,
            "time_zone": outlook.time_zone,
            "used_so_far": outlook.used_so_far,
            "projected_total": outlook.projected_total,
            "interval_80": IntervalOut.of(outlook.interval_80),
            "interval_95": IntervalOut.of(outlook.interval_95),
            "enough_history": outlook.enough_history,
            "history_days": outlook.history_days,
            "balance": outlook.balance,
            "balance_runs_out": BalanceCrossingOut(
                earliest=outlook.balance_runs_out[0],
                likely=outlook.balance_runs_out[1],
                latest=outlook.balance_runs_out[2],
                lasts_through=outlook.balance_horizon,
            )
            if outlook.balance_runs_out is not None and outlook.balance_horizon is not None
            else None,
            "days": [
                ForecastDayOut(
                    day=day,
                    used=used,
                    forecast=forecast,
                    credits=credits,
                    cumulative=cumulative,
                    interval_80=IntervalOut(low=low_80, high=high_80),
                    interval_95=IntervalOut(low=low_95, high=high_95),
                )
                for (day, used, forecast, credits, cumulative, low_80, high_80, low_95, high_95) in rows
            ],
        }


# ---- get_credit_balance -------------------------------------------------------------------------------------------


class PeriodOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: datetime = Field(alias="from", description="Start of the current usage period, UTC.")
    end: datetime = Field(alias="to", description="The reset instant (exclusive end of the period), UTC.")


class GrantOut(BaseModel):
    name: str = Field(description="The grant's name from its metadata, else 'grant' and the end of its id.")
    amount: Credits | None = Field(description="Credits granted; null where the source does not say (v3's value).")
    remaining: Credits | None = Field(
        description="Credits left of it now; null when it is not effective yet, and for every grant of v3's credits "
        "ledger, which keeps no remaining amount per grant."
    )
    effective_at: datetime | None
    expires_at: datetime | None = Field(description="When it expires (exclusive); null when it never does.")
    recurring: bool = Field(description="It refills to its amount at each recurrence.")
    state: Literal["active", "future", "expired", "voided"]


class RunwayOut(BaseModel):
    earliest: date = Field(description="The earliest day (UTC) the balance runs out at the recent pace (the fast end "
                           "of its 80% range).")  # fmt: skip
    latest: date | None = Field(
        description="The latest such day (the slow end); null when at that pace it lasts until the reset."
    )
    likely: date | None = Field(description="The day at the expected pace; null when at that pace it lasts.")
    before_reset: bool = Field(description="The earliest day comes before the period resets.")
    grant_expiring_first: str | None = Field(
        description="A grant that expires with credits left before the balance runs out (its name), if any."
    )


class BalanceResult(BaseModel):
    """The balance tool's structured result; for no allowance every figure is null and `grants` empty."""

    tenant: str
    status: Literal["metered", "none", "not_metered"] = Field(
        description="metered: an allowance with a balance; none: no credit allowance is set up for the tenant; "
        "not_metered: a boolean or static entitlement, with no balance."
    )
    as_of: datetime
    balance: Credits | None = Field(description="Credits left now (the sum of the active grants' balances).")
    usage: Credits | None = Field(description="Credits used in the current usage period.")
    overage: Credits | None = Field(description="Usage this period beyond what the grants cover.")
    has_access: bool | None
    soft_limit: bool | None = Field(description="Usage may exceed the balance.")
    period: PeriodOut | None
    grants: list[GrantOut] = Field(description="At most 50, in OpenMeter's burn-down order; the workbook has all.")
    grants_total: int = Field(description="How many grants there are in all.")
    runway: RunwayOut | None = Field(description="When the balance runs out; null when it outlasts the period.")
    download_url: str | None = Field(description="The Excel report; null for an answer without figures.")
    expires_at: datetime | None = Field(description="When the download link stops working.")
    source: Literal["entitlement", "ledger"] = Field(
        description="entitlement: the entitlement value; ledger: v3's prepaid credits ledger (one currency)."
    )
    currency: str | None = Field(description="The ledger's currency the balance is in; null for an entitlement.")
    usage_since: datetime | None = Field(
        description="Ledger: `usage` counts from here (its active grants took effect); the ledger has no period."
    )
    demo: bool


def balance_result(
    found: CreditBalance, download_url: str | None, expires_at: datetime | None, demo: bool
) -> dict[str, Any]:
    """The balance answer as its output schema says, JSON-ready. Names are cut where the text cuts them."""
    metered = found.status == "metered"
    period = found.period if metered else None
    runway = found.runway if metered else None
    result = BalanceResult(
        tenant=shorten_plain(found.tenant, BALANCE_NAME_LIMIT),
        status=found.status,
        as_of=found.as_of,
        balance=found.balance if metered else None,
        usage=found.usage if metered else None,
        overage=found.overage if metered else None,
        has_access=found.has_access if metered else None,
        soft_limit=found.soft_limit if metered else None,
        period=PeriodOut(start=period.start, end=period.end) if period else None,
        grants=[
            GrantOut(
                name=shorten_plain(grant.name, BALANCE_NAME_LIMIT),
                amount=grant.amount,
                remaining=grant.remaining,
                effective_at=grant.effective_at,
                expires_at=grant.expires_at,
                recurring=grant.recurring,
                state=grant.state,
            )
            for grant in found.grants[:PREVIEW_ROWS]
        ],
        grants_total=len(found.grants),
        runway=RunwayOut(
            earliest=runway.earliest,
            latest=runway.latest,
            likely=runway.likely,
            before_reset=runway.before_reset,
            grant_expiring_first=runway.grant_expiring_first,
        )
        if runway
        else None,
        download_url=download_url,
        expires_at=expires_at,
        source=found.source,
        currency=found.currency,
        usage_since=found.usage_since if metered else None,
        demo=demo,
    )
    return result.model_dump(mode="json", by_alias=True)
