from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ai_credit_usage.runtime.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
KEY = "om-secret-value-123"


def run_main(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Start `main.py` as an operator would; configuration errors stop it before it binds a port."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMETER_", "MCP_", "PUBLIC_", "TENANT_"))}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py")],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_defaults() -> None:
    settings = load_settings(_env_file=None, openmeter_api_key=KEY)
    assert settings.openmeter_url == "https://openmeter.cloud"
    assert settings.openmeter_meter == "ai_credits"
    assert (settings.mcp_host, settings.mcp_port) == ("127.0.0.1", 8765)
    assert settings.download_base_url == "http://localhost:8765"
    assert settings.download_ttl_seconds == 600
    assert settings.max_event_rows == 1_000_000
    assert KEY not in repr(settings)


@pytest.mark.parametrize(
    ("url", "api", "expected"),
    [
        pytest.param("https://openmeter.cloud", None, "v1", id="root-is-v1"),
        pytest.param("http://localhost:8888", None, "v1", id="self-hosted-root"),
        pytest.param("http://localhost:8888/api/v3", None, "v3", id="self-hosted-v3"),
        pytest.param("https://openmeter.cloud/api/v3/", None, "v3", id="cloud-v3-trailing-slash"),
        pytest.param("https://eu.api.konghq.com/v3", None, "v3", id="konnect"),
        pytest.param("https://proxy.example/metering", None, "v1", id="other-path-is-v1"),
        pytest.param("https://proxy.example/metering", "v3", "v3", id="other-path-as-told"),
        pytest.param("http://localhost:8888/api/v3", " V3 ", "v3", id="spelled-loosely"),
        pytest.param("http://localhost:8888", "v1", "v1", id="explicit-v1"),
    ],
)
def test_the_api_follows_openmeter_api_or_the_url(url: str, api: str | None, expected: str) -> None:
    overrides = {"openmeter_api": api} if api else {}
    settings = load_settings(_env_file=None, openmeter_api_key=KEY, openmeter_url=url, **overrides)
    assert settings.api == expected


def test_env_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(f"OPENMETER_API_KEY={KEY}\nMCP_PORT=9000\nMCP_ALLOWED_HOSTS=a.example, b:8443\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MCP_PORT", "9100")
    settings = load_settings()
    assert settings.mcp_port == 9100
    assert settings.download_base_url == "http://localhost:9100"
    assert settings.extra_allowed_hosts == ["a.example", "b:8443"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({}, "OPENMETER_API_KEY is not set", id="missing-key"),
        pytest.param({"openmeter_api_key": "  "}, "OPENMETER_API_KEY is not valid", id="blank-key"),
        pytest.param({"openmeter_api_key": KEY, "mcp_port": "eighty"}, "MCP_PORT='eighty' is not valid", id="port"),
        pytest.param({"openmeter_api_key": KEY, "mcp_port": "70000"}, "MCP_PORT='70000' is not valid", id="range"),
        pytest.param({"openmeter_api_key": KEY, "openmeter_url": "openmeter"}, "OPENMETER_URL='openmeter'", id="url"),
        pytest.param({"openmeter_api_key": KEY, "download_ttl_seconds": "0"}, "DOWNLOAD_TTL_SECONDS='0'", id="ttl"),
        pytest.param(
            {"openmeter_api_key": KEY, "openmeter_url": "http://openmeter:abc"},
            "OPENMETER_URL='http://openmeter:abc' is not valid",
            id="url-port-not-a-number",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "openmeter_url": "http://127.0.0.1:99999"},
            "OPENMETER_URL='http://127.0.0.1:99999' is not valid",
            id="url-port-out-of-range",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "public_base_url": "http://x:abc"},
            "PUBLIC_BASE_URL='http://x:abc' is not valid",
            id="public-url-port",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "openmeter_url": f"https://user:{KEY}@openmeter.cloud"},
            "OPENMETER_URL is not valid: must not carry a user name or password",
            id="url-credentials",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "mcp_allowed_hosts": "a.example, b c"},
            "MCP_ALLOWED_HOSTS='a.example, b c' is not valid: 'b c' is not a host name",
            id="allowed-host-with-blank",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "openmeter_meter": "ai-credits"},
            "OPENMETER_METER='ai-credits' is not valid: a meter key is lower-case letters and digits",
            id="meter-key-with-hyphen",
        ),
        *[
            pytest.param(
                {"openmeter_api_key": KEY, "openmeter_meter": key}, f"OPENMETER_METER={key!r} is not valid", id=key
            )
            for key in ("AI_credits", "ai__credits", "_ai", "ai_", "a" * 65, "ai credits", "01J0000000000000000000000")
        ],
        pytest.param(
            {"openmeter_api_key": "om-cl\u00e9-secret"},
            "OPENMETER_API_KEY is not valid: it holds a character that cannot be sent in an HTTP header",
            id="non-ascii-key",
        ),
        pytest.param(
            {"openmeter_api_key": "om-secret\x00tail"},
            "OPENMETER_API_KEY is not valid: it holds a character that cannot be sent in an HTTP header",
            id="control-character-in-key",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "openmeter_api": "v2"},
            "OPENMETER_API='v2' is not valid: expected v1 .OpenMeter's v1 API. or v3",
            id="api-name",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "openmeter_url": "http://localhost:8888/api/v3", "openmeter_api": "v1"},
            "OPENMETER_URL='http://localhost:8888/api/v3' is the base of OpenMeter's v3 API, but OPENMETER_API=v1",
            id="v3-url-with-v1",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "openmeter_url": "https://us.api.konghq.com/v3", "openmeter_api": "v1"},
            "is Kong Konnect, which serves only OpenMeter's v3 API at 'https://us.api.konghq.com/v3'",
            id="konnect-with-v1",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "openmeter_url": "https://au.api.konghq.com"},
            "OPENMETER_URL='https://au.api.konghq.com' is Kong Konnect, .* at 'https://au.api.konghq.com/v3'",
            id="konnect-root",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "openmeter_url": "https://openmeter.cloud", "openmeter_api": "v3"},
            "is a server's root, where OpenMeter serves its v1 API, but OPENMETER_API=v3: .*"
            "'https://openmeter.cloud/api/v3'",
            id="root-with-v3",
        ),
        pytest.param(
            {"openmeter_api_key": KEY, "mcp_host": "0.0.0.0", "tenant_override": "acme"},
            "TENANT_OVERRIDE/ROLE_OVERRIDE are for local development only",
            id="override-off-loopback",
        ),
    ],
)
def test_bad_configuration_is_one_clear_line(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(_env_file=None, **overrides)
    assert "\n" not in str(caught.value)
    assert KEY not in str(caught.value)
    assert "secret" not in str(caught.value)  # not even a key that was refused


@pytest.mark.parametrize(
    "key", ["ai_credits", "credits2026", "a", "a" * 64, "01JABCDEFGHJKMNPQRSTVWXYZ0", "7zzzzzzzzzzzzzzzzzzzzzzzzz"]
)
def test_meter_keys_the_real_server_accepts_are_accepted(key: str) -> None:
    assert load_settings(_env_file=None, openmeter_api_key=KEY, openmeter_meter=key).openmeter_meter == key


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({}, "ai-credits-mcp: OPENMETER_API_KEY is not set", id="missing-key"),
        pytest.param({"OPENMETER_API_KEY": KEY, "MCP_PORT": "abc"}, "ai-credits-mcp: MCP_PORT='abc'", id="bad-port"),
        pytest.param(
            {"OPENMETER_API_KEY": KEY, "OPENMETER_METER": "ai-credits"},
            "ai-credits-mcp: OPENMETER_METER='ai-credits' is not valid",
            id="meter-key",
        ),
        pytest.param(
            {"OPENMETER_API_KEY": KEY, "OPENMETER_URL": "http://openmeter:abc"},
            "ai-credits-mcp: OPENMETER_URL='http://openmeter:abc' is not valid",
            id="bad-openmeter-port",
        ),
        pytest.param(
            {"OPENMETER_API_KEY": "om-cl\u00e9-secret"},
            "ai-credits-mcp: OPENMETER_API_KEY is not valid: it holds a character that cannot be sent",
            id="non-ascii-key",
        ),
        pytest.param(
            {"OPENMETER_API_KEY": KEY, "OPENMETER_URL": "https://us.api.konghq.com/v3", "OPENMETER_API": "v1"},
            "ai-credits-mcp: OPENMETER_URL='https://us.api.konghq.com/v3' is Kong Konnect",
            id="konnect-url-with-v1",
        ),
        pytest.param(
            {"OPENMETER_API_KEY": KEY, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
            | {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "ai-credits-mcp: OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported here",
            id="otlp-protocol",
        ),
    ],
)
def test_main_stops_with_one_line_and_no_traceback(env: dict[str, str], message: str, tmp_path: Path) -> None:
    result = run_main(env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("ai-credits-mcp:")]) == 1
    assert KEY not in result.stderr + result.stdout
    assert "secret" not in result.stderr + result.stdout
    if not env:  # a newcomer's first try: the line also says how to run without a key
        assert result.stderr.strip().endswith("or run `uv run main.py --demo` to try it with generated data.")


def test_every_setting_is_documented() -> None:
    """Each variable the server reads is in .env.example and in README's configuration table."""
    from ai_credit_usage.runtime.settings import Settings

    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        variable = name.upper()
        assert f"\n{variable}=" in example or f"\n#{variable}=" in example, f"{variable} is not in .env.example"
        assert f"`{variable}`" in readme, f"{variable} is not in README's configuration table"


def test_env_example_loads_and_names_every_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """.env.example as an operator copies it (with a key) is a valid configuration, and documents every setting."""
    example = (ROOT / ".env.example").read_text()
    (tmp_path / ".env").write_text(example.replace("OPENMETER_API_KEY=\n", f"OPENMETER_API_KEY={KEY}\n"))
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert (settings.api, settings.openmeter_url) == ("v1", "https://openmeter.cloud")
    missing = [name.upper() for name in Settings.model_fields if f"{name.upper()}=" not in example]
    assert missing == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"openmeter_credits_feature": "AI-Credits"}, "OPENMETER_CREDITS_FEATURE=", id="feature"),
        pytest.param({"openmeter_customer_key": "tais"}, "OPENMETER_CUSTOMER_KEY='tais' is not valid", id="no-tenant"),
        pytest.param({"openmeter_customer_key": "{tenant}-{tenant}"}, "with {tenant} once", id="twice"),
        pytest.param({"openmeter_customer_key": "{tenant:>9}"}, "with {tenant} once", id="format-spec"),
        pytest.param({"openmeter_customer_key": "{user}"}, "with {tenant} once", id="other-field"),
        pytest.param({"openmeter_customer_key": "{tenant"}, "with {tenant} once", id="unmatched"),
        pytest.param({"openmeter_customer_key": "tais/{tenant}"}, "must not contain /", id="slash"),
        pytest.param({"openmeter_customer_key": "tais%2F{tenant}"}, "must not contain /", id="percent"),
    ],
)
def test_bad_credit_settings_are_one_clear_line(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_settings(_env_file=None, openmeter_api_key=KEY, **overrides)
    assert "\n" not in str(caught.value)


def test_customer_key_template_fills_the_tenant_and_refuses_path_changing_names() -> None:
    default = load_settings(_env_file=None, openmeter_api_key=KEY)
    assert default.openmeter_credits_feature is None
    assert default.customer_key("acme") == "acme"
    prefixed = load_settings(_env_file=None, openmeter_api_key=KEY, openmeter_customer_key="tais-{tenant}")
    assert prefixed.customer_key("Initech Ltd") == "tais-Initech Ltd"  # escaped when it goes into the path
    for name in ("a/b", "..", ".", "a\\b", "50%", "a\nb", ""):
        assert default.customer_key(name) is None, name
    assert prefixed.customer_key("..") == "tais-.."  # one path segment, not a parent directory
    assert default.customer_key("x" * 257) is None
