"""The one gate every tool call passes: an admin of a named tenant, with only the declared arguments.

`initialize`, `tools/list` and the rest pass untouched, so a client can connect and list tools without headers. A
refusal is a tool result with `isError` and one sentence, so the chat can tell the user. The gate owns the call's
`ToolCall` record: it opens the call's span, and once the call is over it writes the audit line and the metrics.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware
from mcp.server.mcpserver import MCPServer

from ai_credit_usage.access.caller import Refusal, claimed, identify_caller
from ai_credit_usage.access.token_caller import caller_from_claims
from ai_credit_usage.answers.results import error_result
from ai_credit_usage.runtime.audit import audit
from ai_credit_usage.runtime.errors import shown
from ai_credit_usage.runtime.settings import Settings
from ai_credit_usage.runtime.telemetry import record_tool_call, tool_span
from ai_credit_usage.runtime.tool_call import Caller, ToolCall, current_call


def caller_gate(settings: Settings, mcp: MCPServer) -> ServerMiddleware[Any]:
    declared_arguments: dict[str, dict[str, Any]] = {}  # tool -> its input schema's properties

    async def gate(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        if not declared_arguments:
            declared_arguments.update(
                {tool.name: dict(tool.input_schema.get("properties", {})) for tool in await mcp.list_tools()}
            )
        params = ctx.params or {}
        name = params.get("name")
        tool = name[:100] if isinstance(name, str) else "unknown"
        headers = ctx.request.headers if ctx.request is not None else {}
        overrides = {"tenant_override": settings.tenant_override, "role_override": settings.role_override}
        with tool_span(tool) as span:
            tenant, role = claimed(headers, **overrides)
            call = ToolCall(tool=tool, tenant=tenant, role=role, span=span)
            try:
                call.caller = _identify(settings, ctx, headers, overrides)
                if settings.jwt_mode:  # the audit line records who the token says called, not what headers claim
                    call.tenant, call.role = call.caller.tenant[:200], ", ".join(call.caller.roles)[:200] or None
                check_arguments(tool, params.get("arguments") or {}, declared_arguments)
            except Refusal as refusal:
                call.fail("refused", str(refusal))
                _finish(call)
                return error_result(str(refusal))
            token = current_call.set(call)
            try:
                result = await call_next(ctx)
            except BaseException:
                call.fail("error", "exception")
                raise
            else:
                if call.outcome == "ok" and _is_error(result):
                    call.fail("error", "tool error")
                return result
            finally:
                current_call.reset(token)
                _finish(call)

    return gate


def _identify(
    settings: Settings, ctx: ServerRequestContext[Any, Any], headers: Mapping[str, str], overrides: dict[str, Any]
) -> Caller:
    """The caller from the headers, or in JWT mode from the verified token's claims (JwtBearerGate put it in the
    request's scope) with the headers checked against them."""
    if not settings.jwt_mode:
        return identify_caller(headers, **overrides)
    user = ctx.request.scope.get("user") if ctx.request is not None else None
    claims = user.access_token.claims if isinstance(user, AuthenticatedUser) else None
    if claims is None:  # the HTTP gate lets no request through without a verified token; refuse if one ever did
        raise Refusal("The caller could not be identified, so no usage can be shown.")
    return caller_from_claims(
        claims, headers, tenant_claim=settings.mcp_jwt_tenant_claim, roles_claim=settings.mcp_jwt_roles_claim
    )


def _finish(call: ToolCall) -> None:
    audit(call)
    record_tool_call(call)  # the same facts as span attributes and metrics


def _is_error(result: HandlerResult) -> bool:
    if isinstance(result, dict):
        return bool(result.get("isError"))
    return bool(getattr(result, "is_error", False))


def check_arguments(tool: str, arguments: Any, declared_arguments: Mapping[str, Mapping[str, Any]]) -> None:
    """Undeclared arguments are refused (nothing may widen the tenant scope), and so are values outside a declared
    choice, with one sentence naming the parameter rather than a validation dump."""
    properties = declared_arguments.get(tool)
    if properties is None or not isinstance(arguments, dict):
        return  # unknown tools and malformed arguments get the SDK's own error
    unexpected = sorted(set(arguments) - set(properties))
    if unexpected:
        takes = f"only {_listed(sorted(properties))}" if properties else "no arguments"
        raise Refusal(
            f"{tool} takes {takes}; it always answers for your own tenant, "
            f"so leave out {', '.join(repr(name) for name in unexpected)}."
        )
    for name, value in arguments.items():
        if value is None:
            continue
        items = _item_choices(properties[name])
        if items is not None:  # a list of choices (the summary's group_by)
            value = _json_list(value)
            if not isinstance(value, list) or not all(isinstance(item, str) and item in items for item in value):
                raise Refusal(
                    f"{name} must be a list of {_listed(items)} such as [{items[0]!r}] (or left out); "
                    f"{shown(value)} is not."
                )
            continue
        choices = _choices(properties[name])
        if choices is not None and value not in choices:
            raise Refusal(f"{name} must be one of {_listed(choices)} (or left out); {shown(value)} is not one of them.")
        if choices is None and not isinstance(value, str) and "string" in _types(properties[name]):
            example = "2026-01-15" if name.endswith("_date") else "Europe/Paris" if name == "time_zone" else "a name"
            raise Refusal(f"{name} must be text such as {example} (or left out); {shown(value)} is not.")


def _types(schema: Mapping[str, Any]) -> set[str]:
    """The JSON types a parameter's schema allows (`type`, or the `anyOf` of an optional one)."""
    return {str(option.get("type")) for option in [schema, *schema.get("anyOf", [])] if isinstance(option, dict)}


def _choices(schema: Mapping[str, Any]) -> list[Any] | None:
    """The values a `Literal[...] | None` parameter allows, from its JSON schema (`enum`, or inside `anyOf`)."""
    for option in [schema, *schema.get("anyOf", [])]:
        if isinstance(option, dict) and isinstance(option.get("enum"), list):
            return list(option["enum"])
    return None


def _json_list(value: Any) -> Any:
    """A list some clients send as JSON text ('["module"]'), which the SDK parses before validating: read it so."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError, RecursionError):
            return json.loads(value)
    return value


def _item_choices(schema: Mapping[str, Any]) -> list[Any] | None:
    """The values each item of an array parameter allows (`items.enum`, or inside `anyOf`)."""
    for option in [schema, *schema.get("anyOf", [])]:
        if isinstance(option, dict) and option.get("type") == "array":
            return _choices(option.get("items") or {})
    return None


def _listed(names: list[Any]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
