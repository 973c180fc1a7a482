"""Who is asking, in JWT mode: the tenant and roles of the verified token's claims, not of the headers.

Headers that disagree with the token are refused: `X-Tenant-Name` and `X-User-UserRole` may still be sent (TAIS
sends them), but then they must say what the token says. Only spaces and tabs are trimmed and roles compare
ASCII-case-insensitively, so no Unicode blank or look-alike letter turns into another tenant or into `admin`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai_credit_usage.access.caller import (
    ROLE_HEADER,
    TENANT_HEADER,
    Refusal,
    ascii_lower,
    header_values,
    is_admin_role,
    trim,
)
from ai_credit_usage.runtime.tool_call import Caller

DEFAULT_TENANT_CLAIM = "tenant"
DEFAULT_ROLES_CLAIM = "roles"


def caller_from_claims(
    claims: Mapping[str, Any],
    headers: Mapping[str, str] | None,
    *,
    tenant_claim: str = DEFAULT_TENANT_CLAIM,
    roles_claim: str = DEFAULT_ROLES_CLAIM,
) -> Caller:
    """The caller the token names if they are an administrator; `Refusal` otherwise."""
    headers = headers or {}
    tenant = claim(claims, tenant_claim)
    if not isinstance(tenant, str) or not trim(tenant):
        raise Refusal(
            f"Your sign-in token names no tenant (claim {tenant_claim!r}), so no usage can be shown; "
            "ask the TAIS operator to check MCP_JWT_TENANT_CLAIM."
        )
    tenant = trim(tenant)
    roles = _roles(claim(claims, roles_claim))
    if roles is None:
        raise Refusal(
            f"Your sign-in token carries no roles (claim {roles_claim!r}), so no usage can be shown; "
            "ask the TAIS operator to check MCP_JWT_ROLES_CLAIM."
        )
    sent_tenants = {trim(value) for value in header_values(headers, TENANT_HEADER)}
    if sent_tenants and sent_tenants != {tenant}:
        raise Refusal(
            "The chat service sent a tenant (X-Tenant-Name) that is not your sign-in token's, so no usage can be "
            "shown; ask the TAIS operator to check the tool's configuration."
        )
    sent_roles = header_values(headers, ROLE_HEADER)
    if sent_roles and _role_set(_split(", ".join(sent_roles))) != _role_set(roles):
        raise Refusal(
            "The chat service sent roles (X-User-UserRole) that are not your sign-in token's, so no usage can be "
            "shown; ask the TAIS operator to check the tool's configuration."
        )
    if not any(is_admin_role(role) for role in roles):
        raise Refusal(
            "Only tenant administrators can see AI credit usage; ask an administrator of your tenant for these figures."
        )
    return Caller(tenant=tenant, roles=roles)


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name, or by a dotted path into nested objects (`realm_access.roles`) when no claim has that name."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _roles(value: Any) -> tuple[str, ...] | None:
    """A roles claim as a list of names: a JSON array of strings, or one string (comma- or space-separated)."""
    if isinstance(value, str):
        return _split(value.replace(" ", ","))
    if isinstance(value, list) and all(isinstance(role, str) for role in value):
        return tuple(trim(role) for role in value if trim(role))
    return None


def _split(value: str) -> tuple[str, ...]:
    return tuple(trim(role) for role in value.split(",") if trim(role))


def _role_set(roles: tuple[str, ...]) -> set[str]:
    return {ascii_lower(role) for role in roles}
