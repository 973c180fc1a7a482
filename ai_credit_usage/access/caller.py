"""Who is asking: the tenant and roles TAIS forwards in `X-Tenant-Name` and `X-User-UserRole`.

Nothing else reads those headers. They are read on every tool call (never remembered from `initialize`), because
one MCP session may carry calls for different tenants.
"""

from __future__ import annotations

from collections.abc import Mapping

from ai_credit_usage.runtime.errors import UserFacingError
from ai_credit_usage.runtime.tool_call import Caller

TENANT_HEADER = "x-tenant-name"
ROLE_HEADER = "x-user-userrole"
ADMIN_ROLES = frozenset({"admin", "administrators"})
# HTTP's optional whitespace (RFC 9110 §5.6.3): the only blanks trimmed from a header value. Python's `str.strip()`
# would also trim no-break, em and ideographic spaces, making "acme" + U+00A0 read as "acme" (issue 16 F3).
HTTP_BLANKS = " \t"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Refusal(UserFacingError):
    """The caller may not see usage data; the message says why and what to do."""


def identify_caller(
    headers: Mapping[str, str] | None, *, tenant_override: str | None = None, role_override: str | None = None
) -> Caller:
    """The caller if they are an administrator of a named tenant; `Refusal` otherwise."""
    headers = headers or {}
    role_header = role_override if role_override is not None else header_value(headers, ROLE_HEADER)
    roles = tuple(trim(role) for role in role_header.split(",") if trim(role))
    if not any(is_admin_role(role) for role in roles):
        raise Refusal(
            "Only tenant administrators can see AI credit usage; ask an administrator of your tenant for these figures."
        )
    # Every line the header came in, trimmed; the same tenant sent twice is still that one tenant.
    tenants = {trim(value) for value in header_values(headers, TENANT_HEADER)}
    if tenant_override is None and len(tenants) > 1:
        # Fail closed: which of two tenants is meant is not ours to guess.
        raise Refusal(
            "The chat service sent more than one tenant (X-Tenant-Name), so no usage can be shown; "
            "ask the TAIS operator to check the tool's configuration."
        )
    tenant = trim(tenant_override) if tenant_override is not None else next(iter(tenants), "")
    if not tenant:
        raise Refusal(
            "Your tenant is not known (the chat service sent no X-Tenant-Name), so no usage can be shown; "
            "ask the TAIS operator to check the tool's configuration."
        )
    return Caller(tenant=tenant, roles=roles)


def claimed(
    headers: Mapping[str, str] | None, *, tenant_override: str | None = None, role_override: str | None = None
) -> tuple[str | None, str | None]:
    """The tenant and role as the request states them, trimmed and cut to 200 characters, whether or not they
    pass: what the audit line records of a call, refused or not."""
    headers = headers or {}
    tenant = tenant_override if tenant_override is not None else header_value(headers, TENANT_HEADER)
    role = role_override if role_override is not None else header_value(headers, ROLE_HEADER)
    return trim(tenant)[:200] or None, trim(role)[:200] or None


def trim(value: str) -> str:
    """A header value without the spaces and tabs around it; every other character, blank or not, is the value."""
    return value.strip(HTTP_BLANKS)


def is_admin_role(role: str) -> bool:
    """`admin` or `Administrators`, ASCII letters in any case and nothing else: no Unicode case folding, which
    would make "Admini\\u017ftrators" (long s) or "admini\\ufb06rators" (ligature) an administrator."""
    return role.isascii() and ascii_lower(role) in ADMIN_ROLES


def ascii_lower(role: str) -> str:
    """Only A-Z lowered: roles compare ASCII-case-insensitively, never by Unicode case rules."""
    return role.translate(_ASCII_LOWER)


def header_value(headers: Mapping[str, str], name: str) -> str:
    """A header as text; a header sent on several lines is their comma list, as HTTP defines it."""
    return ", ".join(header_values(headers, name))


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every line of a header, as text. HTTP carries bytes and Starlette decodes them as Latin-1; TAIS sends UTF-8,
    so a non-ASCII tenant such as "Müller" arrives as "MÃ¼ller" unless we decode it back."""
    getlist = getattr(headers, "getlist", None)
    values = list(getlist(name)) if getlist is not None else [headers[name]] if name in headers else []
    return [_utf8(value) for value in values]


def _utf8(value: str) -> str:
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value
