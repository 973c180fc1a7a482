"""Copy what the contract test needs out of OpenMeter's and Konnect's OpenAPI specs: for each operation the server
calls, its path, method, parameters (with style/explode), request body schema and 200 response schema, and every
component schema those reach.

    uv run --with pyyaml scripts/vendor_openmeter_requests.py <spec.yaml> <name> <source>

<name> is one of SPECS below; <source> is written into the file (repository, commit, path). Re-run when a spec moves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

SPECS = {
    "v1": ("getMeter", "queryMeter", "listEventsV2", "getCustomerEntitlementV2", "getCustomerEntitlementValueV2",
           "listCustomerEntitlementGrantsV2", "getCustomerEntitlementHistoryV2"),
    "v3-upstream": ("list-meters", "get-meter", "query-meter", "list-metering-events", "list-customers",
                    "get-customer-credit-balance", "list-credit-grants"),
    "v3-konnect": ("list-meters", "get-meter", "query-meter", "list-metering-events", "list-customers",
                   "get-customer-credit-balance", "list-credit-grants"),
}  # fmt: skip
OUT = Path(__file__).resolve().parents[1] / "tests" / "openmeter_spec"


def main(spec_path: str, name: str, source: str) -> None:
    spec = load_spec(spec_path)
    components = spec.get("components", {})

    def resolve(node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node and not node["$ref"].startswith("#/components/schemas/"):
            section, key = node["$ref"].removeprefix("#/components/").split("/", 1)
            node = components[section][key]
        return node

    operations: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if not isinstance(operation, dict) or operation.get("operationId") not in SPECS[name]:
                continue
            body = operation.get("requestBody")
            body_schema = resolve(body)["content"]["application/json"]["schema"] if body else None
            responses = operation.get("responses", {})
            ok = resolve(responses.get("200") or responses.get("201") or {})
            response = ok.get("content", {}).get("application/json", {}).get("schema")
            parameters = []
            for raw in [*shared, *operation.get("parameters", [])]:
                parameter = dict(resolve(raw))
                parameter.pop("description", None)
                parameters.append(parameter)
            operations[operation["operationId"]] = {
                "path": path,
                "method": method.upper(),
                "beta": "Pre-release" in (operation.get("description") or "") or bool(operation.get("x-unstable")),
                "parameters": parameters,
                "body": body_schema,
                "response": response,
            }
    missing = sorted(set(SPECS[name]) - set(operations))
    if missing:
        raise SystemExit(f"{spec_path} lacks {missing}")
    wanted = reachable_schemas(operations, components.get("schemas", {}))
    body = {"source": source, "operations": operations, "components": {"schemas": wanted}}
    out = OUT / f"requests-{name}.json"
    out.write_text(json.dumps(_bare(body), indent=1) + "\n")
    print(f"wrote {out} ({len(operations)} operations, {len(wanted)} schemas, {out.stat().st_size:,} bytes)")


def load_spec(spec_path: str) -> Any:
    """An OpenAPI spec file (YAML, or JSON, which YAML reads too)."""
    return yaml.safe_load(Path(spec_path).read_text())


def reachable_schemas(roots: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    """Every component schema `roots` reach through `$ref`s, transitively, sorted by name."""
    wanted: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                key = ref.rsplit("/", 1)[1]
                if key not in wanted:
                    wanted[key] = schemas[key]
                    walk(schemas[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(roots)
    return dict(sorted(wanted.items()))


def _bare(node: Any, names: bool = False) -> Any:
    """Without prose and examples: they validate nothing and would triple the files. `names`: the keys of this
    object are names (of properties, schemas, operations), so a property called `description` stays."""
    if isinstance(node, dict):
        return {key: _bare(value, key in _NAMED) for key, value in node.items() if names or key not in _PROSE}
    if isinstance(node, list):
        return [_bare(value) for value in node]
    return node


_NAMED = frozenset({"properties", "schemas", "operations", "patternProperties"})
_PROSE = frozenset({"description", "example", "examples", "x-examples", "summary"})


if __name__ == "__main__":
    main(*sys.argv[1:4])
