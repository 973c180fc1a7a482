"""Everything about OpenMeter's side: the seam the questions ask (`interface`), the HTTP core with its retries and
errors (`http`), the v1/v2 API behind the seam (`v1`) and the v3 API (`v3`, as on Kong Konnect), the meter
definition (`meter`), and an in-process stand-in of the real server for tests and `--demo` (`standin`). It may
import `runtime` only; the stand-in imports nothing of the server but how the meter reads a number (`numbers`)."""

from __future__ import annotations

import httpx2

from ai_credit_usage.openmeter.credits_v3 import CreditsV3
from ai_credit_usage.openmeter.entitlements import EntitlementsV2
from ai_credit_usage.openmeter.http import OpenMeterHttp, RetryPolicy
from ai_credit_usage.openmeter.interface import OpenMeter
from ai_credit_usage.openmeter.v1 import OpenMeterV1
from ai_credit_usage.openmeter.v3 import OpenMeterV3
from ai_credit_usage.runtime.settings import Settings

__all__ = [
    "CreditsV3",
    "EntitlementsV2",
    "OpenMeter",
    "OpenMeterHttp",
    "OpenMeterV1",
    "OpenMeterV3",
    "RetryPolicy",
    "connect",
    "connect_credits",
    "connect_entitlements",
    "open_http",
]


def open_http(
    settings: Settings, *, retry: RetryPolicy | None = None, transport: httpx2.AsyncBaseTransport | None = None
) -> OpenMeterHttp:
    """The one HTTP client every OpenMeter API of the process shares; `transport` replaces the network."""
    return OpenMeterHttp(
        settings.openmeter_url,
        settings.openmeter_api_key.get_secret_value(),
        timeout_seconds=settings.openmeter_timeout_seconds,
        max_concurrency=settings.openmeter_max_concurrency,
        retry=retry,
        transport=transport,
    )


def connect(
    settings: Settings,
    *,
    retry: RetryPolicy | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    http: OpenMeterHttp | None = None,
) -> OpenMeter:
    """The OpenMeter API the settings point at, on one shared HTTP client (`http`, or a new one)."""
    http = http or open_http(settings, retry=retry, transport=transport)
    return OpenMeterV3(http) if settings.api == "v3" else OpenMeterV1(http)


def connect_entitlements(settings: Settings, http: OpenMeterHttp) -> EntitlementsV2 | None:
    """The v2 customer-entitlement client of the credits feature, on `http`; None when no feature is configured or
    the API is v3 (see `connect_credits`)."""
    feature = settings.openmeter_credits_feature
    return None if feature is None or settings.api != "v1" else EntitlementsV2(http, feature)


def connect_credits(settings: Settings, http: OpenMeterHttp) -> CreditsV3 | None:
    """v3's credits client (customer by key, entitlement value, credits ledger) of the credits feature, on `http`;
    None when no feature is configured or the API is v1 (see `connect_entitlements`)."""
    feature = settings.openmeter_credits_feature
    return None if feature is None or settings.api != "v3" else CreditsV3(http, feature)
