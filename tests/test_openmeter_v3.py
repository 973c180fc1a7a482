"""The v3 API (Kong Konnect Metering & Billing) behind the seam, and telling the two APIs apart.

The production clients against the stand-in over real HTTP; the stand-in's own v3 contract is in
tests/test_openmeter_standin_v3.py.
"""

from __future__ import annotations

import json

import pytest

from ai_credit_usage.openmeter.http import OpenMeterError
from ai_credit_usage.openmeter.standin import OpenMeterStandIn
from ai_credit_usage.openmeter.v1 import SERVES_V3
from tests.conftest import v1_client

pytestmark = pytest.mark.anyio
KONG_NOT_FOUND = {
    "type": "https://kongapi.info/konnect/not-found",
    "status": 404,
    "title": "Not Found",
    "instance": "kong:trace:123",
    "detail": "The requested route was not found",
}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(KONG_NOT_FOUND, id="v3-problem"),
        pytest.param({"message": "no Route matched with those values"}, id="kong-gateway"),
    ],
)
async def test_a_v1_client_told_that_the_url_speaks_v3(
    openmeter: OpenMeterStandIn, openmeter_url: str, body: dict[str, object]
) -> None:
    openmeter.fail(status=404, body=json.dumps(body).encode(), path_prefix="/api/v1/")
    client = v1_client(openmeter_url)
    try:
        with pytest.raises(OpenMeterError) as caught:
            await client.meter("ai_credits")
    finally:
        await client.aclose()
    assert str(caught.value) == SERVES_V3
    assert "OPENMETER_API=v3" in SERVES_V3


async def test_a_v1_meter_that_is_not_there_is_still_no_meter(openmeter_url: str) -> None:
    client = v1_client(openmeter_url)
    try:
        with pytest.raises(OpenMeterError, match="OpenMeter has no meter 'nope'"):
            await client.meter("nope")
    finally:
        await client.aclose()
