"""Configuration from the environment and `.env`, validated once at start-up.

Every problem becomes a `ConfigError` whose message is one line naming the variable, so `main.py` can print it
and stop without a traceback. The API key is a `SecretStr`: its repr is masked and no message ever echoes it.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EXCEL_MAX_DATA_ROWS = 1_048_575  # 1,048,576 rows a sheet, less the header
# The defaults, named once: modules that take these values use the same constants as their own defaults.
DEFAULT_OPENMETER_TIMEOUT_SECONDS = 30.0
DEFAULT_OPENMETER_MAX_CONCURRENCY = 8
DEFAULT_TOOL_DEADLINE_SECONDS = 120.0
DEFAULT_DOWNLOAD_STORE_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_WORKBOOK_PROCESS_ROWS = 20_000  # below this, a thread writes faster than a process starts and is fed
DEFAULT_MAX_EVENT_ROWS = 1_000_000
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# A host name or IPv4 address, or a bracketed IPv6 address, with an optional port: what a Host header carries.
_ALLOWED_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?:\d{1,5}|\*))?$")
# OpenMeter's feature key (api/openapi.cloud.yaml, Feature.key): lower-case words joined by single underscores.
FEATURE_KEY = r"^[a-z0-9]+(?:_[a-z0-9]+)*$"
DEFAULT_CUSTOMER_KEY = "{tenant}"
# Characters a customer key may not carry whatever the template: they would change the request's path once a proxy
# decodes it (`/`, `\\`, `%`), or cannot travel in one (controls).
_PATH_CHANGING = re.compile(r"[/\\%\x00-\x1f\x7f]")


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message is meant for the operator as it is."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True)

    openmeter_api_key: SecretStr
    openmeter_url: str = "https://openmeter.cloud"
    openmeter_meter: str = Field(default="ai_credits", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    mcp_host: str = "127.0.0.1"
    mcp_port: int = Field(default=8765, ge=1, le=65535)
    public_base_url: str | None = None
    download_ttl_seconds: int = Field(default=600, ge=1, le=7 * 24 * 3600)
    mcp_allowed_hosts: str = ""
    max_event_rows: int = Field(default=DEFAULT_MAX_EVENT_ROWS, ge=1, le=EXCEL_MAX_DATA_ROWS)
    openmeter_timeout_seconds: float = Field(default=DEFAULT_OPENMETER_TIMEOUT_SECONDS, gt=0, le=600)
    openmeter_max_concurrency: int = Field(default=DEFAULT_OPENMETER_MAX_CONCURRENCY, ge=1, le=256)
    tool_deadline_seconds: float = Field(default=DEFAULT_TOOL_DEADLINE_SECONDS, gt=0, le=3600)
    download_store_max_bytes: int = Field(default=DEFAULT_DOWNLOAD_STORE_MAX_BYTES, ge=1024 * 1024)
    mcp_auth_token: SecretStr | None = None
    workbook_process_rows: int = Field(default=DEFAULT_WORKBOOK_PROCESS_ROWS, ge=1)
    mcp_stateless: bool = False
    download_store_url: SecretStr | None = None  # may carry the Redis password
    tenant_override: str | None = None
    role_override: str | None = None
    # Credits left (get_credit_balance): the feature whose entitlement holds the allowance; unset, the tool is not
    # offered. The customer key is this template with the tenant name put in.
    openmeter_credits_feature: str | None = Field(default=None, max_length=64, pattern=FEATURE_KEY)
    openmeter_customer_key: str = DEFAULT_CUSTOMER_KEY

    @field_validator("openmeter_url", "public_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        expected = "expected an http(s) URL such as https://openmeter.cloud or http://localhost:8888"
        try:
            parts = urlsplit(value)
            _ = parts.port  # a port that is not a number, or not in 0-65535, raises ValueError here
        except ValueError:
            raise ValueError(expected) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(expected)
        if parts.username is not None or parts.password is not None:
            # The URL is logged at start-up and shown in links; credentials belong in OPENMETER_API_KEY.
            raise ValueError("must not carry a user name or password")
        return value.rstrip("/")

    @field_validator("mcp_allowed_hosts")
    @classmethod
    def _host_names(cls, value: str) -> str:
        for host in _host_list(value):
            if not _ALLOWED_HOST.match(host):
                raise ValueError(f"{host!r} is not a host name: use names like mcp.example.com or 10.0.0.5:8765")
        return value

    @field_validator("openmeter_api_key", "mcp_auth_token")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is blank")
        return value

    @field_validator("download_store_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        expected = "expected redis://[:password@]host[:port][/db], rediss://… or unix:///path/to/redis.sock"
        try:
            parts = urlsplit(value.get_secret_value())
            _ = parts.port  # a port that is not a number raises ValueError here
        except ValueError:
            raise ValueError(expected) from None
        database = parts.path.strip("/")
        if parts.scheme in ("redis", "rediss"):
            valid = bool(parts.hostname) and (not database or database.isdigit())
        else:
            valid = parts.scheme == "unix" and bool(parts.path)
        if not valid:
            raise ValueError(expected)
        return value

    @field_validator("openmeter_customer_key")
    @classmethod
    def _customer_key_template(cls, value: str) -> str:
        rest = value.replace("{tenant}", "")
        if value.count("{tenant}") != 1 or "{" in rest or "}" in rest:
            raise ValueError("expected a template with {tenant} once, such as {tenant} or tais-{tenant}")
        if _PATH_CHANGING.search(rest) or len(value) > 200:
            raise ValueError("must not contain /, \\, % or control characters, and stay under 200 characters")
        return value

    def customer_key(self, tenant: str) -> str | None:
        """The OpenMeter customer key of `tenant` (the template filled in), or None when the tenant's name would make
        a key that changes the request path (`/`, `\\`, `%`, control characters, `.` or `..`) or is too long."""
        key = self.openmeter_customer_key.replace("{tenant}", tenant)
        if not tenant or _PATH_CHANGING.search(key) or key in (".", "..") or len(key) > 256:
            return None
        return key

    @property
    def download_base_url(self) -> str:
        return self.public_base_url or f"http://localhost:{self.mcp_port}"

    @property
    def extra_allowed_hosts(self) -> list[str]:
        return _host_list(self.mcp_allowed_hosts)

    @property
    def binds_loopback(self) -> bool:
        if self.mcp_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.mcp_host).is_loopback
        except ValueError:
            return False


def _host_list(value: str) -> list[str]:
    return [host.strip() for host in value.split(",") if host.strip()]


def load_settings(**overrides: object) -> Settings:
    """Read the environment (which wins) and `.env`; raise `ConfigError` with one line naming the bad variable."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    if (settings.tenant_override or settings.role_override) and not settings.binds_loopback:
        raise ConfigError(
            "TENANT_OVERRIDE/ROLE_OVERRIDE are for local development only: unset them, "
            f"or bind MCP_HOST to a loopback address (it is {settings.mcp_host!r})."
        )
    return settings


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = str(error["loc"][0]).upper() if error["loc"] else "configuration"
    if error["type"] == "missing":
        if name == "OPENMETER_API_KEY":
            return (
                "OPENMETER_API_KEY is not set: put your OpenMeter API key in the environment or in .env, "
                "or run `uv run main.py --demo` to try it with generated data."
            )
        return f"{name} is not set."
    reason = str(error["msg"]).removeprefix("Value error, ")
    secret = name in ("OPENMETER_API_KEY", "MCP_AUTH_TOKEN", "DOWNLOAD_STORE_URL")
    if secret or "@" in str(error.get("input")):  # never echo a secret, even a malformed one, nor URL credentials
        return f"{name} is not valid: {reason}."
    return f"{name}={error.get('input')!r} is not valid: {reason}."
