"""Copy the OpenMeter response schemas the entitlement stand-in is checked against out of the real spec.

    uv run --with pyyaml scripts/vendor_openmeter_schemas.py <openmeter checkout>/api/openapi.cloud.yaml <commit>

writes tests/openmeter_spec/entitlements.json: the operations' 200 schemas and every component they reach, as
JSON Schema (OpenAPI 3.0 `nullable` does not occur in them), prose kept. Reading the spec and finding what it reaches
is `vendor_openmeter_requests.py`'s. Re-run it when OpenMeter's spec moves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from vendor_openmeter_requests import load_spec, reachable_schemas  # the sibling script: same walk, same reading

OPERATIONS = (
    "getCustomerEntitlementV2",
    "getCustomerEntitlementValueV2",
    "listCustomerEntitlementGrantsV2",
    "getCustomerEntitlementHistoryV2",
    "listCustomerEntitlementsV2",
)
OUT = Path(__file__).resolve().parents[1] / "tests" / "openmeter_spec" / "entitlements.json"


def main(spec_path: str, commit: str) -> None:
    spec = load_spec(spec_path)
    roots: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and operation.get("operationId") in OPERATIONS:
                schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
                roots[operation["operationId"]] = {"path": path, "method": method.upper(), "schema": schema}
    wanted = reachable_schemas(roots, spec["components"]["schemas"])
    body = {"source": f"openmeterio/openmeter@{commit} api/openapi.cloud.yaml", "operations": roots,
            "components": {"schemas": wanted}}  # fmt: skip
    OUT.write_text(json.dumps(body, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT} ({len(roots)} operations, {len(wanted)} schemas)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
