"""Everything about OpenMeter's side: the seam the questions ask (`interface`), the HTTP core with its retries and
errors (`http`), the v1/v2 API behind the seam (`v1`) and the v3 API (`v3`, as on Kong Konnect), the meter
definition (`meter`), and an in-process stand-in of the real server for tests and `--demo` (`standin`)."""

from __future__ import annotations

import httpx2

from ai_credit_usage.openmeter.http import OpenMeterHttp, RetryPolicy
from ai_credit_usage.openmeter.interface import OpenMeter
from ai_credit_usage.openmeter.v1 import OpenMeterV1
from ai_credit_usage.openmeter.v3 import OpenMeterV3
from ai_credit_usage.settings import Settings

__all__ = ["OpenMeter", "OpenMeterHttp", "OpenMeterV1", "OpenMeterV3", "RetryPolicy", "connect"]


def connect(
    settings: Settings, *, retry: RetryPolicy | None = None, transport: httpx2.AsyncBaseTransport | None = None
) -> OpenMeter:
    """The OpenMeter API the settings point at, on one shared HTTP client; `transport` replaces the network."""
    http = OpenMeterHttp(
        settings.openmeter_url,
        settings.openmeter_api_key.get_secret_value(),
        timeout_seconds=settings.openmeter_timeout_seconds,
        max_concurrency=settings.openmeter_max_concurrency,
        retry=retry,
        transport=transport,
    )
    return OpenMeterV3(http) if settings.api == "v3" else OpenMeterV1(http)
