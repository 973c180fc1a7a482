"""The real server's edges (issue 15, read in openmeterio/openmeter at 7e57a394): what our client must do so that
the real OpenMeter answers as the stand-in does."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ai_credit_usage.openmeter.interface import AggregateQuery
from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from ai_credit_usage.window import Window
from tests.conftest import AI_METER, v1_client

pytestmark = pytest.mark.anyio
JANUARY = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


async def test_a_dimension_asked_twice_is_sent_once(openmeter: OpenMeterStandIn, openmeter_url: str) -> None:
    openmeter.ingest(make_event(tenant="acme", credits=3, time=datetime(2026, 1, 5, tzinfo=UTC), user="ann"))
    client = v1_client(openmeter_url)
    try:
        rows = await client.query(AI_METER, AggregateQuery(JANUARY, ("user", "tenant", "user"), "acme"))
    finally:
        await client.aclose()
    assert [(row.value, row.dimensions) for row in rows] == [(3.0, {"user": "ann", "tenant": "acme"})]
    assert openmeter.requests_to("/query")[-1].params("groupBy") == ["user", "tenant"]
