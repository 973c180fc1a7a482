"""An in-process OpenMeter: meters, meter queries and event lists over an in-memory event store.

It follows the real Go server, not the OpenAPI spec where the two differ. Two users, so the demo cannot drift from
what the tests check:
- the tests serve ``OpenMeterStandIn().app`` over real HTTP (``tests.servers.serve_in_thread``), replacing OpenMeter
  only at the network boundary, and inject faults with ``fail()``;
- ``--demo`` (``demo``, beside this module) loads generated events into one and hands the production OpenMeter
  client an ``httpx2.ASGITransport`` to its app, so demo answers go through exactly the production code path.
Layout: ``app`` (the store, request log, faults, auth, routing to API routers), ``store`` (how the real server
stores and reads events), ``wire`` and ``problems`` (the HTTP side every API shares), ``v1`` (the v1/v2 paths).
"""

from ai_credit_usage.openmeter.standin.app import AI_CREDITS_METER, OpenMeterStandIn
from ai_credit_usage.openmeter.standin.store import format_time, make_event, parse_rfc3339
from ai_credit_usage.openmeter.standin.wire import RecordedRequest

__all__ = ["AI_CREDITS_METER", "OpenMeterStandIn", "RecordedRequest", "format_time", "make_event", "parse_rfc3339"]
