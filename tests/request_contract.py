"""Checks a request the server sent against the OpenAPI spec of the API it spoke (a small validator, not a library:
it knows exactly the parameter styles these specs use, so a shape a spec refuses cannot slip through unseen).

The specs are the vendored extracts in tests/openmeter_spec/requests-*.json (see the README there): each operation's
path, method, parameters (path; query `form`, exploded arrays as repeated keys; `deepObject` as `name[a][b]=v`;
`content: application/json` as one JSON value) and JSON body. Every query key must belong to a declared parameter,
no key may repeat unless the parameter is an exploded array, and every value must validate against its schema
(OpenAPI 3.0 schemas, read as JSON Schema draft 4 with `nullable`; `date-time` checked as RFC 3339).
It also checks the stand-in's answers against the same files (`response_problems`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft4Validator, FormatChecker

from ai_credit_usage.openmeter.standin import RecordedRequest

SPEC_DIR = Path(__file__).parent / "openmeter_spec"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
FORMATS = FormatChecker()
FORMATS.checks("date-time")(lambda value: not isinstance(value, str) or bool(_RFC3339.match(value)))
_DEEP = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    pattern: re.Pattern[str]
    beta: bool
    parameters: tuple[dict[str, Any], ...]
    body: Any
    response: Any


class Spec:
    """One vendored spec: its operations and component schemas."""

    def __init__(self, name: str, document: dict[str, Any]) -> None:
        self.name = name
        self.source: str = document["source"]
        self.components = _nullable(document["components"])
        self.operations = [
            Operation(
                operation_id,
                raw["method"],
                raw["path"],
                re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "([^/]+)", re.escape(raw["path"])) + "$"),
                raw["beta"],
                tuple(raw["parameters"]),
                raw["body"],
                raw["response"],
            )
            for operation_id, raw in document["operations"].items()
        ]

    def operation(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        for operation in self.operations:
            match = operation.pattern.match(path)
            if operation.method == method and match:
                names = re.findall(r"\{([^}]+)\}", operation.path)
                return operation, {name: unquote(value) for name, value in zip(names, match.groups(), strict=True)}
        return None

    def errors(self, schema: Any, value: Any) -> list[str]:
        validator = self._validator(json.dumps(schema, sort_keys=True))
        return [f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in validator.iter_errors(value)]

    @functools.cache  # noqa: B019 (a handful of specs, alive for the whole run)
    def _validator(self, schema_text: str) -> Draft4Validator:
        schema = _nullable(json.loads(schema_text))
        return Draft4Validator({"components": self.components, "allOf": [schema]}, format_checker=FORMATS)

    def resolve(self, schema: Any) -> Any:
        while isinstance(schema, dict) and "$ref" in schema:
            schema = self.components["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema


# Each API's spec, as the files that make it up: upstream v3 adds the entitlement value endpoint it gained after the
# vendored snapshot (written by hand from the Go code; see the README beside the files).
FILES = {
    "v1": ("requests-v1.json",),
    "v3-upstream": ("requests-v3-upstream.json", "requests-v3-upstream-later.json"),
    "v3-konnect": ("requests-v3-konnect.json",),
}


@functools.cache
def load(name: str) -> Spec:
    documents = [json.loads((SPEC_DIR / file).read_text()) for file in FILES[name]]
    merged: dict[str, Any] = {"source": "; ".join(d["source"] for d in documents), "operations": {}}
    schemas: dict[str, Any] = {}
    for document in documents:
        merged["operations"].update(document["operations"])
        for key, schema in document["components"]["schemas"].items():
            schemas.setdefault(key, schema)
    merged["components"] = {"schemas": schemas}
    return Spec(name, merged)


def problems(spec: Spec, request: RecordedRequest, base: str = "") -> list[str]:
    """Why `spec` refuses the request (empty: it conforms). `base` is stripped from the path first (`/api/v3`)."""
    path = request.path.removeprefix(base) if base else request.path
    found = spec.operation(request.method, path)
    if found is None:
        return [f"{spec.name}: no operation {request.method} {path}"]
    operation, path_values = found
    out: list[str] = []
    query = list(request.query)
    claimed: set[int] = set()
    for parameter in operation.parameters:
        name, where = parameter["name"], parameter["in"]
        if where == "path":
            out += _named(spec, operation, name, spec.errors(parameter["schema"], path_values[name]))
            continue
        if where != "query":
            continue
        mine = [i for i, (key, _) in enumerate(query) if _owner(key) == name]
        claimed.update(mine)
        if not mine:
            if parameter.get("required"):
                out.append(f"{spec.name} {operation.operation_id}: required query parameter {name} missing")
            continue
        value, trouble = _value(spec, parameter, [query[i] for i in mine])
        if trouble:
            out.append(f"{spec.name} {operation.operation_id}: {name}: {trouble}")
            continue
        schema = parameter.get("schema") or parameter["content"]["application/json"]["schema"]
        out += _named(spec, operation, name, spec.errors(schema, value))
    for index, (key, _) in enumerate(query):
        if index not in claimed:
            out.append(f"{spec.name} {operation.operation_id}: undeclared query parameter {key}")
    if operation.body is not None:
        try:
            body = json.loads(request.body)
        except ValueError:
            out.append(f"{spec.name} {operation.operation_id}: the body is not JSON")
        else:
            out += _named(spec, operation, "body", spec.errors(operation.body, body))
    elif request.body:
        out.append(f"{spec.name} {operation.operation_id}: a body where the operation takes none")
    return out


def response_problems(spec: Spec, method: str, path: str, body: Any, base: str = "") -> list[str]:
    """Why the operation's 200 schema refuses `body` (the stand-in's answer)."""
    found = spec.operation(method, path.removeprefix(base) if base else path)
    if found is None:
        return [f"{spec.name}: no operation {method} {path}"]
    operation = found[0]
    schema = operation.response
    return _named(spec, operation, "response", spec.errors(schema, body)) if schema is not None else []


def _named(spec: Spec, operation: Operation, name: str, errors: Iterable[str]) -> list[str]:
    return [f"{spec.name} {operation.operation_id}: {name}: {error}" for error in errors]


def _owner(key: str) -> str:
    match = _DEEP.match(key)
    return match.group(1) if match else key


def _value(spec: Spec, parameter: dict[str, Any], items: list[tuple[str, str]]) -> tuple[Any, str | None]:
    """The parameter's value as the spec's style serializes it, or why it cannot be one."""
    keys = [key for key, _ in items]
    if "content" in parameter:  # one JSON value (v1's `filter`, `advancedMeterGroupByFilters`)
        if len(items) > 1 or keys[0] != parameter["name"]:
            return None, "a JSON parameter given more than once or with brackets"
        try:
            return json.loads(items[0][1]), None
        except ValueError:
            return None, "not JSON"
    schema = spec.resolve(parameter["schema"])
    style = parameter.get("style", "form")
    if style == "deepObject":
        if len(set(keys)) < len(keys):
            return None, f"a repeated key ({', '.join(sorted({k for k in keys if keys.count(k) > 1}))})"
        value: dict[str, Any] = {}
        for key, raw in items:
            match = _DEEP.match(key)
            if match is None:
                return None, f"{key} is not name[property]"
            path = re.findall(r"\[([^\[\]]*)\]", match.group(2))
            node, node_schema = value, schema
            for part in path[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    return None, f"{key} both a value and an object"
                node, node_schema = child, _property(spec, node_schema, part)
            if path[-1] in node:
                return None, f"{key} both a value and an object"
            node[path[-1]] = _scalar(spec, _property(spec, node_schema, path[-1]), raw)
        return value, None
    if any(key != parameter["name"] for key in keys):
        return None, "brackets on a form parameter"
    explode = parameter.get("explode", True)
    if schema.get("type") == "array":
        values = [raw for _, raw in items] if explode else items[-1][1].split(",")
        if not explode and len(items) > 1:
            return None, "repeated, though not exploded"
        return [_scalar(spec, schema.get("items", {}), raw) for raw in values], None
    if len(items) > 1:
        return None, "repeated"
    return _scalar(spec, schema, items[0][1]), None


def _property(spec: Spec, schema: Any, name: str) -> Any:
    schema = spec.resolve(schema)
    if isinstance(schema, dict):
        return spec.resolve(schema.get("properties", {}).get(name, {}))
    return {}


def _scalar(spec: Spec, schema: Any, raw: str) -> Any:
    """A query string value as the type its schema names (integers and booleans; anything else stays text)."""
    kind = spec.resolve(schema).get("type") if isinstance(spec.resolve(schema), dict) else None
    if kind == "integer" and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if kind == "number" and re.fullmatch(r"-?\d+(\.\d+)?", raw):
        return float(raw)
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema (`type` also allows null)."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items()}
    if out.pop("nullable", False) is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


# Operations the server may ask Konnect for although its published spec does not have them yet: each is beta
# upstream, and the server falls back when it is not served (404). They must still conform to upstream's spec.
NOT_YET_PUBLISHED = {"v3-konnect": frozenset({"get-customer-entitlement-access"})}
SPECS_OF_API = {"v1": ("v1",), "v3": ("v3-upstream", "v3-konnect")}
V3_BASES = ("/api/v3", "/v3")


def sent_problems(api: str, requests: Iterable[RecordedRequest]) -> list[str]:
    """Every way the requests break the spec(s) of the API they were sent to: v1 under upstream's api/openapi.yaml,
    v3 under both upstream's api/v3/openapi.yaml and Konnect's published spec."""
    out: list[str] = []
    for request in requests:
        base = next((b for b in V3_BASES if request.path.startswith(b + "/")), "") if api == "v3" else ""
        for name in SPECS_OF_API[api]:
            spec = load(name)
            skip = NOT_YET_PUBLISHED.get(name, frozenset())
            if skip and _upstream_operation(request, base) in skip:
                continue
            out += [
                f"{request.method} {request.path}?{_query_text(request)}: {p}" for p in problems(spec, request, base)
            ]
    return out


def _upstream_operation(request: RecordedRequest, base: str) -> str | None:
    found = load("v3-upstream").operation(request.method, request.path.removeprefix(base))
    return found[0].operation_id if found else None


def _query_text(request: RecordedRequest) -> str:
    return "&".join(f"{key}={value}" for key, value in request.query)
