"""Register the running server as a TAIS tool and attach it to a chat session: what `scripts/register.sh` runs.

    python -m scripts.registration [--keep-alive] [--interval SECONDS] [--env-file PATH]

TAIS forgets a registered tool after about an hour, so `--keep-alive` registers and attaches it again every
50 minutes until interrupted. Every problem is a `RegistrationError` whose message is one line for the operator;
`main()` prints it and exits non-zero, never with a traceback. The JWT is the operator's own token: its payload is
read locally for the tenant, the user and the expiry (no signature check), and it is never printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import httpx2
from dotenv import dotenv_values

TOOL_NAME = "ai-credits-mcp"
TOOL_DESCRIPTION = (
    "AI credit usage of the caller's own tenant, read from OpenMeter: totals, breakdowns by user, module, product "
    "and skill, and individual events, each with an Excel download. Tenant administrators only."
)
DEFAULT_API_URL = "http://localhost:5001"
DEFAULT_TOOLS_PATH = "/api/v2/tools-service/tools"
SESSION_PATH = "/api/v2/sessions-service/{session_id}"
DEFAULT_MCP_PORT = 8765
DEFAULT_RENEW_SECONDS = 3000.0  # 50 minutes: renewed well before TAIS drops the tool after about an hour
MIN_RENEW_SECONDS = 1.0
RETRY_SECONDS = 60.0  # after a failed renewal, try again sooner than the full interval
TIMEOUT = httpx2.Timeout(15.0, connect=5.0)
JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")  # JWS compact: base64url only
TENANT_CLAIMS = ("tenant", "tenant_name", "tenantName", "tid")
USER_CLAIMS = ("preferred_username", "email", "upn", "unique_name", "name", "sub")
VARIABLES = (
    "TAIS_JWT",
    "TAIS_SESSION_ID",
    "TAIS_API_URL",
    "TAIS_TOOLS_PATH",
    "TAIS_TENANT",
    "TAIS_USER",
    "TAIS_RENEW_SECONDS",
    "TAIS_SERVER_URL",
    "PUBLIC_BASE_URL",
    "MCP_PORT",
)


class RegistrationError(Exception):
    """Stops a registration; the message is one line meant for the operator, and never holds the JWT."""


@dataclass(frozen=True)
class Config:
    jwt: str = field(repr=False)
    api_url: str
    tools_path: str
    server_url: str
    session_id: str | None
    tenant: str | None
    user: str | None
    renew_seconds: float


@dataclass(frozen=True)
class Identity:
    """Who the tool is registered for, and where each value came from (a claim name or an override)."""

    tenant: str
    tenant_source: str
    user: str
    user_source: str
    expires_at: datetime | None


def read_variables(environ: Mapping[str, str], env_file: Path) -> dict[str, str]:
    """The registration variables from `env_file` and the environment; the environment wins, blanks count as unset."""
    values: dict[str, str] = {}
    if env_file.exists() and not env_file.is_dir():  # /dev/null is a fine "no file"
        values.update({k: v.strip() for k, v in dotenv_values(env_file).items() if k in VARIABLES and v and v.strip()})
    values.update({k: v.strip() for k, v in environ.items() if k in VARIABLES and v.strip()})
    return values


def load_config(values: Mapping[str, str]) -> Config:
    jwt = values.get("TAIS_JWT", "")
    if jwt[:7].lower() == "bearer ":  # pasted with its scheme
        jwt = jwt[7:].strip()
    if not jwt:
        raise RegistrationError("TAIS_JWT is not set: put your TAIS access token in .env or the environment.")
    api_url = _http_url("TAIS_API_URL", values.get("TAIS_API_URL", DEFAULT_API_URL))
    tools_path = "/" + values.get("TAIS_TOOLS_PATH", DEFAULT_TOOLS_PATH).lstrip("/")
    if "TAIS_SERVER_URL" in values:  # where TAIS reaches /mcp; PUBLIC_BASE_URL is where browsers get downloads
        server_url = _http_url("TAIS_SERVER_URL", values["TAIS_SERVER_URL"])
    elif "PUBLIC_BASE_URL" in values:
        server_url = _http_url("PUBLIC_BASE_URL", values["PUBLIC_BASE_URL"])
    else:
        port = _number("MCP_PORT", values.get("MCP_PORT", str(DEFAULT_MCP_PORT)), int, 1, 65535)
        server_url = f"http://localhost:{port}"
    session_id = values.get("TAIS_SESSION_ID")
    if session_id is not None:
        session_id = _session_id(session_id, "TAIS_SESSION_ID")
    renew = _number("TAIS_RENEW_SECONDS", values.get("TAIS_RENEW_SECONDS", str(DEFAULT_RENEW_SECONDS)), float)
    return Config(
        jwt=jwt,
        api_url=api_url,
        tools_path=tools_path,
        server_url=server_url,
        session_id=session_id,
        tenant=values.get("TAIS_TENANT"),
        user=values.get("TAIS_USER"),
        renew_seconds=renew,
    )


def read_claims(jwt: str, now: datetime) -> tuple[dict[str, Any], datetime | None]:
    """The payload of a JWS compact token, unverified, and its expiry; an expired token stops here."""
    parts = jwt.split(".")
    if len(parts) != 3 or not parts[1]:
        raise RegistrationError(
            "TAIS_JWT is not a JWT (expected header.payload.signature): copy the whole access token."
        )
    if not JWT_SHAPE.fullmatch(jwt):  # e.g. a trailing "…" copied with it, which cannot go into an HTTP header
        raise RegistrationError(
            "TAIS_JWT is malformed: it holds characters a JWT cannot (only letters, digits, '-', '_' and two dots); "
            "copy the whole access token and nothing else."
        )
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:  # bad base64, bad UTF-8 and bad JSON are all ValueErrors
        claims = None
    if not isinstance(claims, dict):
        raise RegistrationError(
            "TAIS_JWT is malformed: its payload is not base64url-encoded JSON; copy the whole access token."
        )
    exp = claims.get("exp")
    if exp is None:
        return claims, None
    try:
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise TypeError
        expires_at = datetime.fromtimestamp(exp, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise RegistrationError("TAIS_JWT is malformed: its exp claim is not a time in seconds.") from None
    if expires_at <= now:
        raise RegistrationError(
            f"TAIS_JWT expired at {_iso(expires_at)} ({_duration((now - expires_at).total_seconds())} ago): "
            "sign in to TAIS again and put the fresh token in TAIS_JWT."
        )
    return claims, expires_at


def identify(config: Config, now: datetime) -> Identity:
    claims, expires_at = read_claims(config.jwt, now)
    tenant, tenant_source = _pick("tenant", "TAIS_TENANT", config.tenant, claims, TENANT_CLAIMS)
    user, user_source = _pick("user", "TAIS_USER", config.user, claims, USER_CLAIMS)
    return Identity(tenant, tenant_source, user, user_source, expires_at)


def _pick(
    what: str, variable: str, override: str | None, claims: Mapping[str, Any], names: Sequence[str]
) -> tuple[str, str]:
    if override:
        return override, variable
    for name in names:
        value = claims.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip(), f"claim {name}"
    raise RegistrationError(
        f"TAIS_JWT names no {what} (looked for the claims {', '.join(names)}): set {variable} in .env or the "
        "environment."
    )


def require_terminal(stdin: TextIO) -> None:
    """With no terminal (CI, a pipe) there is nobody to ask for the session id, so stop instead of hanging."""
    if not stdin.isatty():
        raise RegistrationError(
            "TAIS_SESSION_ID is not set and there is no terminal to ask for it: set TAIS_SESSION_ID in .env or "
            "the environment."
        )


def ask_session_id(stdin: TextIO, prompt_to: TextIO) -> str:
    """Ask on the terminal (main has checked, before any network call, that there is one)."""
    print("TAIS session id to attach the tool to: ", end="", file=prompt_to, flush=True)
    return _session_id(stdin.readline(), "the session id")


def check_health(client: httpx2.Client, server_url: str) -> None:
    """Registering a server that is not running would give the chat a dead tool: check first."""
    url = f"{server_url}/health"
    hint = "start it (uv run main.py) or set PUBLIC_BASE_URL / MCP_PORT to where it runs"
    try:
        response = client.get(url)
    except httpx2.TimeoutException:
        raise RegistrationError(f"the MCP server did not answer {url} in time: {hint}.") from None
    except httpx2.HTTPError as exc:
        raise RegistrationError(f"the MCP server does not answer at {url} ({_reason(exc)}): {hint}.") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    healthy = response.status_code == 200 and answer == {"status": "ok"}
    if not healthy and isinstance(answer, dict) and answer.get("status") == "degraded":
        # Our server, up, but it could not hand out downloads: registering it would give the chat a broken tool.
        raise RegistrationError(
            f"the ai-credits-mcp server at {server_url} is running but its download store (Redis) is unreachable "
            f"({url} answered {_status(response)}): start Redis or fix DOWNLOAD_STORE_URL, then run this again."
        )
    if not healthy:
        raise RegistrationError(
            f'{url} answered {_status(response)}, not {{"status": "ok"}}: is the ai-credits-mcp server running '
            "there? Check PUBLIC_BASE_URL / MCP_PORT."
        )


def check_tais_reachable(client: httpx2.Client, config: Config) -> None:
    """Any HTTP answer from the TAIS API's address will do; only a network failure stops here. No token is sent."""
    _to_tais(lambda: client.get(config.api_url), f"at {config.api_url}")


def register_tool(client: httpx2.Client, config: Config, identity: Identity) -> str:
    """POST the tool; its id comes back as `id` (or `toolId`)."""
    url = config.api_url + config.tools_path
    body = {
        "name": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "kind": "mcp",
        "transport": "streamable-http",
        "url": f"{config.server_url}/mcp",
        "tenant": identity.tenant,
        "user": identity.user,
    }
    response = _send(client, config, "POST", url, body, not_found="check TAIS_API_URL and TAIS_TOOLS_PATH")
    try:
        data = response.json()
    except ValueError:
        kind = response.headers.get("content-type") or "no content type"
        raise RegistrationError(
            f"the TAIS API answered {_status(response)} to POST {url} with a body that is not JSON ({kind}): "
            "check that TAIS_API_URL and TAIS_TOOLS_PATH point at the TAIS tools API."
        ) from None
    tool_id = next((data[key] for key in ("id", "toolId") if isinstance(data, dict) and data.get(key) is not None), "")
    if isinstance(tool_id, bool) or not isinstance(tool_id, str | int) or not str(tool_id).strip():
        raise RegistrationError(
            f"the TAIS API answered {_status(response)} to POST {url} without a tool id (id or toolId): check "
            "TAIS_TOOLS_PATH and the TAIS version."
        )
    return str(tool_id).strip()


def attach_tool(client: httpx2.Client, config: Config, session_id: str, tool_id: str) -> None:
    url = config.api_url + SESSION_PATH.format(session_id=quote(session_id, safe=""))
    not_found = f"is {session_id!r} a TAIS chat session? Check TAIS_SESSION_ID"
    _send(client, config, "PATCH", url, {"toolIds": [tool_id]}, not_found=not_found)


def _to_tais(request: Callable[[], httpx2.Response], what: str, reach: str = "") -> httpx2.Response:
    """A request to the TAIS API; a network failure is one line naming `what` was asked."""
    try:
        return request()
    except httpx2.TimeoutException:
        raise RegistrationError(
            f"the TAIS API did not answer {what} in time: is TAIS running and healthy? Check TAIS_API_URL."
        ) from None
    except httpx2.HTTPError as exc:
        raise RegistrationError(
            f"cannot reach the TAIS API {reach}{what} ({_reason(exc)}): is TAIS running? Check TAIS_API_URL."
        ) from None


def _send(
    client: httpx2.Client, config: Config, method: str, url: str, body: object, *, not_found: str
) -> httpx2.Response:
    # The token goes only to TAIS, never to the MCP server's /health.
    headers = {"Authorization": f"Bearer {config.jwt}"}
    response = _to_tais(lambda: client.request(method, url, json=body, headers=headers), f"{method} {url}", "for ")
    if response.is_success:
        return response
    code = response.status_code
    if code == 401:
        hint = "TAIS refused TAIS_JWT; it may be expired or from another TAIS: sign in again and copy a fresh token"
    elif code == 403:
        hint = "the token's user may not do this: use an administrator of the tenant"
    elif code == 404:
        hint = not_found
    elif code >= 500:
        hint = "TAIS failed: see its logs, then try again"
    elif response.is_redirect:
        hint = f"it redirects to {response.headers.get('location', '?')}: check TAIS_API_URL (http or https, port)"
    else:
        hint = "TAIS rejected the request: check the TAIS version and TAIS_API_URL"
    detail = _detail(response, config.jwt)
    raise RegistrationError(f"the TAIS API answered {_status(response)} to {method} {url}{detail}: {hint}.")


def register_once(client: httpx2.Client, config: Config, identity: Identity, session_id: str) -> str:
    check_health(client, config.server_url)
    tool_id = register_tool(client, config, identity)
    attach_tool(client, config, session_id, tool_id)
    return tool_id


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Register, attach and (with --keep-alive) renew until interrupted. Returns the exit status."""
    environ = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    chosen = args.env_file or environ.get("TAIS_ENV_FILE")
    # The default .env is the repository's (register.sh runs from there); a path the operator gives is theirs.
    env_file = Path(environ.get("REGISTER_CALLER_DIR") or ".") / chosen if chosen else Path(".env")
    jwt = ""
    try:
        if chosen and not env_file.exists():
            raise RegistrationError(f"the env file {str(env_file)!r} does not exist.")
        if args.interval is not None and not args.keep_alive:
            raise RegistrationError("--interval only applies with --keep-alive.")
        config = _configure(args, environ, env_file)
        jwt = config.jwt
        identity = identify(config, _now())
        print(
            f"Token: tenant {identity.tenant!r} ({identity.tenant_source}), user {identity.user!r} "
            f"({identity.user_source}), {_expiry(identity.expires_at)}",
            flush=True,
        )
        if not config.session_id:
            require_terminal(sys.stdin)
        with httpx2.Client(timeout=TIMEOUT) as client:
            # Before asking for the session id, so the operator does not type it only to learn the server is down.
            check_health(client, config.server_url)
            check_tais_reachable(client, config)
            session_id = config.session_id
            if not session_id:
                session_id = ask_session_id(sys.stdin, sys.stderr)
                check_health(client, config.server_url)  # typing the id may have taken a while
            tool_id = register_tool(client, config, identity)
            attach_tool(client, config, session_id, tool_id)
            print(f"Registered {TOOL_NAME} for {config.server_url}/mcp: tool id {tool_id}.", flush=True)
            print(f"Attached tool {tool_id} to session {session_id}.", flush=True)
            if not args.keep_alive:
                print("TAIS drops registered tools after about an hour: run with --keep-alive to renew.", flush=True)
                return 0
            print(f"Keeping it alive: renewing every {_duration(config.renew_seconds)} until Ctrl-C.", flush=True)
            _warn_if_token_ends_first(identity, config.renew_seconds)
            return _keep_alive(args, environ, env_file, session_id, tool_id, config.renew_seconds, sleep)
    except RegistrationError as exc:
        print(f"register: {_redact(str(exc), jwt)}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nregister: interrupted before the tool was registered and attached.", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # a bug or a surprise from a library: still one line, and never the token
        print(f"register: {_unexpected(exc, jwt)}", file=sys.stderr, flush=True)
        return 1


def _keep_alive(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    env_file: Path,
    session_id: str,
    tool_id: str,
    interval: float,
    sleep: Callable[[float], None],
) -> int:
    """Renew until interrupted. Each renewal reads .env again, so a fresh TAIS_JWT put there is picked up."""
    delay = interval
    try:
        while True:
            sleep(delay)
            jwt = ""
            try:
                config = _configure(args, environ, env_file)
                jwt = config.jwt
                interval = config.renew_seconds
                identity = identify(config, _now())
                with httpx2.Client(timeout=TIMEOUT) as client:
                    tool_id = register_once(client, config, identity, session_id)
            except Exception as exc:  # keep renewing through anything, as through a TAIS hiccup
                delay = min(interval, RETRY_SECONDS)
                message = _redact(str(exc), jwt) if isinstance(exc, RegistrationError) else _unexpected(exc, jwt)
                print(f"{_clock()} renewal failed: {message} Retrying in {_duration(delay)}.", flush=True)
                continue
            delay = interval
            print(
                f"{_clock()} renewed: tool {tool_id} attached to session {session_id}; "
                f"next renewal in {_duration(delay)}.",
                flush=True,
            )
            _warn_if_token_ends_first(identity, delay)
    except KeyboardInterrupt:
        print(
            f"\nregister: stopped; tool {tool_id} stays attached until TAIS drops it (about an hour after the last "
            "renewal).",
            flush=True,
        )
        return 0


def _warn_if_token_ends_first(identity: Identity, delay: float) -> None:
    if identity.expires_at is not None and (identity.expires_at - _now()).total_seconds() < delay:
        print(
            f"{_clock()} TAIS_JWT expires at {_iso(identity.expires_at)}, before the next renewal: put a fresh token "
            "in .env (it is read again at each renewal).",
            flush=True,
        )


def _configure(args: argparse.Namespace, environ: Mapping[str, str], env_file: Path) -> Config:
    config = load_config(read_variables(environ, env_file))
    if args.interval is not None:  # the flag wins over TAIS_RENEW_SECONDS
        config = replace(config, renew_seconds=_number("--interval", args.interval, float))
    return config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="register.sh",
        description="Register the running ai-credits-mcp server as a TAIS tool and attach it to a chat session.",
    )
    parser.add_argument(
        "--keep-alive", action="store_true", help="register and attach again every interval until interrupted"
    )
    parser.add_argument(
        "--interval",
        metavar="SECONDS",
        help=f"renewal interval with --keep-alive (default: TAIS_RENEW_SECONDS or {DEFAULT_RENEW_SECONDS:.0f})",
    )
    parser.add_argument(
        "--env-file", metavar="PATH", help="read this file instead of .env (default: TAIS_ENV_FILE, then .env)"
    )
    return parser


def _http_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistrationError(f"{name}={value!r} is not valid: expected an http(s) URL such as {DEFAULT_API_URL}.")
    return value.rstrip("/")


def _number(
    name: str, value: str, kind: type[int] | type[float], low: float = MIN_RENEW_SECONDS, high: float = 1e9
) -> float:
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise RegistrationError(f"{name}={value!r} is not valid: expected a number from {low:g} to {high:g}.")
    return number


def _session_id(value: str, what: str) -> str:
    session_id = value.strip()
    if not session_id:
        raise RegistrationError(f"{what} is empty: give the id of the TAIS chat session to attach the tool to.")
    if len(session_id) > 200 or any(ch.isspace() or not ch.isprintable() for ch in session_id):
        raise RegistrationError(f"{what} {session_id[:200]!r} is not a session id: it must be one word.")
    return session_id


def _status(response: httpx2.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".strip()


def _detail(response: httpx2.Response, jwt: str) -> str:
    """TAIS's own explanation (problem+json `detail` or `title`, or `message`), short and on one line."""
    try:
        data = response.json()
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    text = next((str(data[k]) for k in ("detail", "title", "message", "error") if data.get(k)), "")
    text = _redact(" ".join(text.split()), jwt)  # before cutting, so no piece of the token survives
    return f' ("{text[:160]}")' if text else ""


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def _unexpected(exc: Exception, jwt: str) -> str:
    # Redacted before cutting, so no piece of the token survives the cut.
    text = _redact(" ".join(str(exc).split()), jwt)[:160]
    return (
        f"unexpected {type(exc).__name__}{': ' + text if text else ''}; nothing was registered by this attempt. "
        "Check the settings in .env, and report this if it persists."
    )


def _redact(message: str, jwt: str) -> str:
    """A last guard: whatever a server echoed, the token does not reach the terminal."""
    for secret in [jwt, *jwt.split(".")[1:]] if jwt else []:
        if len(secret) >= 8:
            message = message.replace(secret, "***")
    return message


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clock() -> str:
    return _now().strftime("%Y-%m-%d %H:%M:%SZ")


def _expiry(expires_at: datetime | None) -> str:
    if expires_at is None:
        return "no expiry claim"
    return f"expires {_iso(expires_at)} (in {_duration((expires_at - _now()).total_seconds())})"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop on SIGTERM as on Ctrl-C: one line, no traceback
    sys.exit(main())
