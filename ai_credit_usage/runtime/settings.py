"""Configuration from the environment and `.env`, validated once at start-up.

Every problem becomes a `ConfigError` whose message is one line naming the variable, so `main.py` can print it
and stop without a traceback. The API key is a `SecretStr`: its repr is masked and no message ever echoes it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
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
# Workbook child processes at once: openpyxl is CPU-bound (one core each) and a child takes 40-60 MB; calls beyond
# the cap wait for a free one within their deadline (issue 16 F4).
DEFAULT_WORKBOOK_PROCESSES = 2
# Connections uvicorn keeps open at once (idle keep-alive ones and MCP streams included; beyond: 503), and how long
# an idle keep-alive connection may stay (issue 16 F4). uvicorn has no header timeout: put a proxy in front.
DEFAULT_MCP_LIMIT_CONCURRENCY = 100
DEFAULT_MCP_KEEP_ALIVE_SECONDS = 5
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# A host name or IPv4 address, or a bracketed IPv6 address, with an optional port: what a Host header carries.
# OpenMeter's meter key (`ResourceKey` in both APIs' specs: lower-case words joined by single underscores, at most
# 64 characters) or a meter id (a ULID); anything else is a 400 from the real server's request validation.
METER_KEY = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*|[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}")
METER_KEY_MAX = 64
_ALLOWED_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?:\d{1,5}|\*))?$")
OpenMeterApi = Literal["v1", "v3"]
_V3_PATH = re.compile(r"(?:^|/)(?:api/)?v3$")  # the base of the v3 API: .../v3 (Konnect) or .../api/v3 (OpenMeter)
# OpenMeter's feature key (api/openapi.cloud.yaml, Feature.key): lower-case words joined by single underscores.
FEATURE_KEY = r"^[a-z0-9]+(?:_[a-z0-9]+)*$"
CURRENCY_CODE = r"^[A-Za-z0-9_.-]{3,24}$"
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
    # v1 (the v1 meter and v2 event paths under the server's root) or v3 (the paths under the v3 base URL, as on
    # Kong Konnect); unset, it follows OPENMETER_URL: a path ending in /v3 or /api/v3 is v3, anything else v1.
    openmeter_api: OpenMeterApi | None = None
    openmeter_meter: str = "ai_credits"
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
    workbook_processes: int = Field(default=DEFAULT_WORKBOOK_PROCESSES, ge=1, le=64)
    mcp_limit_concurrency: int = Field(default=DEFAULT_MCP_LIMIT_CONCURRENCY, ge=2, le=100_000)
    mcp_keep_alive_seconds: int = Field(default=DEFAULT_MCP_KEEP_ALIVE_SECONDS, ge=1, le=3600)
    # Stateless by default (issue 16 F2): stateful sessions shared by tenants need session_guard.py's protection.
    mcp_stateless: bool = True
    download_store_url: SecretStr | None = None  # may carry the Redis password
    tenant_override: str | None = None
    role_override: str | None = None
    # Issue 16: a closed /mcp off loopback, a download listener of its own, and verified identity (JWT mode).
    mcp_allow_unauthenticated: bool = False  # the network in front of a non-loopback MCP_HOST is private
    download_port: int | None = Field(default=None, ge=1, le=65535)  # serves /download/... and /health only
    download_host: str | None = None  # bind address of DOWNLOAD_PORT; default: MCP_HOST
    mcp_jwt_jwks_url: str | None = None  # set: every /mcp request needs a bearer JWT signed by a key from here
    mcp_jwt_issuer: str | None = None
    mcp_jwt_audience: str | None = None
    mcp_jwt_tenant_claim: str = Field(default="tenant", min_length=1)
    mcp_jwt_roles_claim: str = Field(default="roles", min_length=1)
    mcp_resource_url: str | None = None  # this server's /mcp as clients reach it (RFC 9728 `resource`)
    # Credits left (get_credit_balance): the feature whose entitlement holds the allowance; unset, the tool is not
    # offered. The customer key is this template with the tenant name put in.
    openmeter_credits_feature: str | None = Field(default=None, max_length=64, pattern=FEATURE_KEY)
    openmeter_customer_key: str = DEFAULT_CUSTOMER_KEY
    # v3's credits ledger keeps a balance per currency: the one that holds the credits when a customer has several
    # (ISO codes such as USD, or a custom code of up to 24 characters); unset, the only one the customer holds.
    openmeter_credits_currency: str | None = Field(default=None, pattern=CURRENCY_CODE)

    @field_validator("openmeter_url", "public_base_url", "mcp_jwt_jwks_url", "mcp_resource_url")
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

    @field_validator("mcp_jwt_issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        """Compared with the token's `iss` exactly, so kept exactly (a trailing slash included)."""
        if value is not None and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname):
            raise ValueError(
                "expected the issuer's URL exactly as its tokens' iss claim has it, e.g. https://login.example.com"
            )
        return value

    @field_validator("openmeter_meter")
    @classmethod
    def _meter_key(cls, value: str) -> str:
        if len(value) > METER_KEY_MAX or not METER_KEY.fullmatch(value):
            raise ValueError(
                "a meter key is lower-case letters and digits, words joined by single underscores, at most "
                f"{METER_KEY_MAX} characters (like ai_credits), or the meter's id (a ULID)"
            )
        return value

    @field_validator("openmeter_api", mode="before")
    @classmethod
    def _api_name(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("v1", "v3"):
            return value.strip().lower()
        if value is not None:
            raise ValueError("expected v1 (OpenMeter's v1 API) or v3 (OpenMeter's v3 API, as on Kong Konnect)")
        return value

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

    @field_validator("openmeter_api_key")
    @classmethod
    def _header_safe(cls, value: SecretStr) -> SecretStr:
        # It is sent as `Authorization: Bearer <key>`: only visible ASCII (and inner spaces) can be (issue 16 F5).
        if not all(" " <= character <= "~" for character in value.get_secret_value().strip()):
            raise ValueError(
                "it holds a character that cannot be sent in an HTTP header (only ASCII letters, digits and "
                "punctuation can): copy the key again from OpenMeter"
            )
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
    def api(self) -> OpenMeterApi:
        """The OpenMeter API to speak: OPENMETER_API, or what OPENMETER_URL's path says."""
        return self.openmeter_api or url_api(self.openmeter_url) or "v1"

    @property
    def download_base_url(self) -> str:
        return self.public_base_url or f"http://localhost:{self.mcp_port}"

    @property
    def extra_allowed_hosts(self) -> list[str]:
        return _host_list(self.mcp_allowed_hosts)

    @property
    def jwt_mode(self) -> bool:
        return self.mcp_jwt_jwks_url is not None

    @property
    def resource_url(self) -> str:
        """This server's `/mcp` as its clients reach it: the `resource` of the protected resource metadata."""
        return self.mcp_resource_url or f"http://localhost:{self.mcp_port}/mcp"

    @property
    def binds_loopback(self) -> bool:
        if self.mcp_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.mcp_host).is_loopback
        except ValueError:
            return False

    @property
    def mcp_unguarded(self) -> bool:
        """`/mcp` off loopback with neither MCP_AUTH_TOKEN nor JWT mode: anyone who reaches it is any tenant's admin."""
        return not self.binds_loopback and self.mcp_auth_token is None and not self.jwt_mode


def url_api(url: str) -> OpenMeterApi | None:
    """ "v3" when the URL is a v3 base (its path ends in /v3 or /api/v3); "v1" when it is a server's root (where the
    v1 paths live); None when its path says neither."""
    path = urlsplit(url).path.rstrip("/")
    if _V3_PATH.search(path):
        return "v3"
    return None if path else "v1"


def is_konnect(url: str) -> bool:
    """Kong Konnect's regional API hosts ({us,eu,au,me,in,sg}.api.konghq.com) serve only OpenMeter's v3 API."""
    return (urlsplit(url).hostname or "").lower().endswith(".api.konghq.com")


def _api_mismatch(settings: Settings) -> str | None:
    """One line when OPENMETER_URL shows another API than OPENMETER_API asks for (or than it needs)."""
    url, api = settings.openmeter_url, settings.api
    shown = url_api(url)
    if is_konnect(url) and (api == "v1" or shown != "v3"):
        v3_url = urlsplit(url)._replace(path="/v3", query="", fragment="").geturl()
        return (
            f"OPENMETER_URL={url!r} is Kong Konnect, which serves only OpenMeter's v3 API at {v3_url!r}: "
            "set OPENMETER_URL to that and leave OPENMETER_API unset (or set it to v3)."
        )
    if api == "v1" and shown == "v3":
        return (
            f"OPENMETER_URL={url!r} is the base of OpenMeter's v3 API, but OPENMETER_API=v1: set OPENMETER_API=v3 "
            "(or leave it unset), or point OPENMETER_URL at the server's root for v1."
        )
    if api == "v3" and shown == "v1":
        return (
            f"OPENMETER_URL={url!r} is a server's root, where OpenMeter serves its v1 API, but OPENMETER_API=v3: "
            f"point OPENMETER_URL at the v3 base URL (e.g. {url + '/api/v3'!r}), or set OPENMETER_API=v1."
        )
    return None


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
    _check_mcp_guard(settings)
    mismatch = _api_mismatch(settings)
    if mismatch is not None:
        raise ConfigError(mismatch)
    return settings


def _check_mcp_guard(settings: Settings) -> None:
    """JWT mode is complete or off; off loopback, `/mcp` is guarded (a token or JWT) unless the operator says the
    network is private. The host of PUBLIC_BASE_URL reaches `/mcp` only if MCP_ALLOWED_HOSTS lists it."""
    jwt = {"MCP_JWT_ISSUER": settings.mcp_jwt_issuer, "MCP_JWT_AUDIENCE": settings.mcp_jwt_audience}
    if settings.jwt_mode:
        for name, value in jwt.items():
            if value is None:
                raise ConfigError(f"{name} is not set: JWT mode (MCP_JWT_JWKS_URL) checks every token against it.")
        if settings.mcp_auth_token is not None:
            raise ConfigError(
                "MCP_AUTH_TOKEN and MCP_JWT_JWKS_URL are both set: a request carries one bearer token, so choose one."
            )
        if settings.tenant_override or settings.role_override:
            raise ConfigError(
                "TENANT_OVERRIDE/ROLE_OVERRIDE cannot be used with MCP_JWT_JWKS_URL: the token says who calls."
            )
    elif any(value is not None for value in jwt.values()):
        raise ConfigError("MCP_JWT_ISSUER/MCP_JWT_AUDIENCE are set without MCP_JWT_JWKS_URL, where the keys are.")
    if settings.mcp_unguarded and not settings.mcp_allow_unauthenticated:
        raise ConfigError(
            f"MCP_AUTH_TOKEN is not set, and MCP_HOST={settings.mcp_host!r} is not loopback: anyone who reaches it "
            "could call /mcp as any tenant's admin. Set MCP_AUTH_TOKEN (or MCP_JWT_JWKS_URL), or set "
            "MCP_ALLOW_UNAUTHENTICATED=true if only TAIS can reach that address."
        )
    if settings.download_port is not None and settings.download_port == settings.mcp_port:
        raise ConfigError("DOWNLOAD_PORT is MCP_PORT: the download listener needs a port of its own (or unset it).")


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
