"""Header parsing below HTTP: values an HTTP client refuses to send (surrounding blanks) still behave."""

from __future__ import annotations

import pytest

from ai_credit_usage.access.caller import Refusal, identify_caller


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


# Issue 16 F3: only spaces and tabs are trimmed, the tenant is matched byte for byte after that, and the role is
# compared with ASCII case-insensitivity only (no Unicode case folding).
@pytest.mark.parametrize(
    "tenant",
    [
        "acme\u00a0",  # no-break space
        "\u2003acme",  # em space
        "acme\u3000",  # ideographic space
        "\u200bacme",  # zero-width space
        "acme\n",
        "\vacme",
    ],
)
def test_only_spaces_and_tabs_are_trimmed_from_the_tenant(tenant: str) -> None:
    assert identify_caller({"x-tenant-name": tenant, "x-user-userrole": "admin"}).tenant == tenant


@pytest.mark.parametrize(
    "role",
    [
        "Admini\u017ftrators",  # long s: casefolds to "administrators"
        "admini\ufb06rators",  # the st ligature: casefolds to "administrators"
        "admin\u2003",  # em space
        "\u00a0admin",  # no-break space
        "ADM\u0130N",  # dotted capital I
        "\uff41\uff44\uff4d\uff49\uff4e",  # fullwidth
    ],
)
def test_a_role_is_an_admin_only_by_ascii_rules(role: str) -> None:
    with pytest.raises(Refusal, match="Only tenant administrators"):
        identify_caller({"x-tenant-name": "acme", "x-user-userrole": role})


@pytest.mark.parametrize("role", ["ADMIN", "aDmIn", " \tAdministrators\t ", "reader,\tADMINISTRATORS"])
def test_ascii_case_and_blanks_still_make_an_admin(role: str) -> None:
    assert identify_caller({"x-tenant-name": "acme", "x-user-userrole": role}).tenant == "acme"
