"""Header parsing below HTTP: values an HTTP client refuses to send (surrounding blanks) still behave."""

from __future__ import annotations

import pytest

from ai_credit_usage.caller import Refusal, identify_caller


def test_tenant_is_trimmed_and_roles_are_a_list() -> None:
    caller = identify_caller({"x-tenant-name": "  acme \t", "x-user-userrole": " reader , Administrators "})
    assert caller.tenant == "acme"
    assert caller.roles == ("reader", "Administrators")


@pytest.mark.parametrize("tenant", ["   ", "\t"])
def test_blank_tenant_is_refused(tenant: str) -> None:
    with pytest.raises(Refusal, match="tenant is not known"):
        identify_caller({"x-tenant-name": tenant, "x-user-userrole": "admin"})


def test_overrides_replace_the_headers() -> None:
    caller = identify_caller(
        {"x-tenant-name": "acme", "x-user-userrole": "user"}, tenant_override="demo", role_override="admin"
    )
    assert caller.tenant == "demo"
    with pytest.raises(Refusal):
        identify_caller({"x-user-userrole": "admin", "x-tenant-name": "acme"}, role_override="user")
