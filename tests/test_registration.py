"""`scripts/register.sh` and `scripts.registration` against a stand-in TAIS API and the real server.

Most cases call `main()` in-process (fast, output captured); the script itself runs as a subprocess for the paths
that need a real process: reading `.env`, the terminal prompt, no terminal, `--keep-alive` stopped with Ctrl-C,
and a missing `uv`. Every run checks that the JWT never reaches the output.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ai_credit_usage.runtime.settings import load_settings
from scripts import registration
from scripts.registration import identify, load_config, main, read_variables
from server import create_app
from tests.fake_tais import TOOLS_PATH, FakeTais, Recorded, Reply
from tests.servers import free_port, serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "register.sh"
SESSION = "sess-42"
BASH = shutil.which("bash") or "/bin/bash"


def make_jwt(claims: dict[str, Any], signature: str = "c2lnLW5vdC1jaGVja2VkLWJ5LXJlZ2lzdGVyLTdRa1A") -> str:
    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'RS256', 'typ': 'JWT'})}.{segment(claims)}.{signature}"


def claims(**extra: Any) -> dict[str, Any]:
    return {
        "tenant_name": "acme",
        "preferred_username": "alice@acme.test",
        "exp": int(time.time()) + 3600,
        "marker": "distinctive-jwt-marker-93f1",
        **extra,
    }


JWT = make_jwt(claims())


def assert_no_jwt(*outputs: str, jwt: str = JWT) -> None:
    """Neither the token nor any 20-character piece of its payload or signature."""
    pieces = [segment[i : i + 20] for segment in jwt.split(".")[1:] for i in range(0, max(1, len(segment) - 19), 4)]
    for output in outputs:
        assert jwt not in output
        for piece in pieces:
            assert piece not in output


def closed_url() -> str:
    """An address where nothing listens: connecting is refused at once."""
    port = free_port()
    return f"http://127.0.0.1:{port}"


def posts(tais: FakeTais) -> list[Recorded]:
    return [r for r in tais.requests() if r.method == "POST"]


def patches(tais: FakeTais) -> list[Recorded]:
    return [r for r in tais.requests() if r.method == "PATCH"]


@pytest.fixture(scope="module")
def tais_server() -> Iterator[tuple[FakeTais, str]]:
    # One server for the module (starting and stopping uvicorn per test would double the time); reset per test.
    fake = FakeTais()
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def tais(tais_server: tuple[FakeTais, str]) -> FakeTais:
    tais_server[0].reset()
    return tais_server[0]


@pytest.fixture
def tais_url(tais_server: tuple[FakeTais, str]) -> str:
    return tais_server[1]


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    """The real ai-credits-mcp app, for the /health check; /health never touches OpenMeter."""
    settings = load_settings(_env_file=None, openmeter_api_key="om-unused-key", openmeter_url=closed_url())
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def degraded_mcp_url() -> Iterator[str]:
    """The real app with its Redis download store unreachable: /health answers 503 {"status": "degraded"}."""
    settings = load_settings(
        _env_file=None,
        openmeter_api_key="om-unused-key",
        openmeter_url=closed_url(),
        download_store_url=closed_url().replace("http://", "redis://"),
    )
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture
def env(tais_url: str, mcp_url: str) -> dict[str, str]:
    return {"TAIS_JWT": JWT, "TAIS_API_URL": tais_url, "PUBLIC_BASE_URL": mcp_url, "TAIS_SESSION_ID": SESSION}


RunMain = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run_main(capsys: pytest.CaptureFixture[str]) -> RunMain:
    def run(environ: dict[str, str], *argv: str, **kwargs: Any) -> tuple[int, str, str]:
        code = main(list(argv), environ, **kwargs)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        assert_no_jwt(out, err, jwt=environ.get("TAIS_JWT") or JWT)
        return code, out, err

    return run


# --- in-process: the registration itself ---------------------------------------------------------------------


def test_registers_the_tool_and_attaches_it_to_the_session(
    run_main: RunMain, env: dict[str, str], tais: FakeTais, mcp_url: str
) -> None:
    code, out, err = run_main(env)

    assert (code, err) == (0, "")
    register, attach = tais.requests()
    assert (register.method, register.path) == ("POST", TOOLS_PATH)
    assert register.headers["authorization"] == f"Bearer {JWT}"
    assert register.headers["content-type"] == "application/json"
    assert register.body == {
        "name": "ai-credits-mcp",
        "description": register.body["description"],
        "kind": "mcp",
        "transport": "streamable-http",
        "url": f"{mcp_url}/mcp",
        "tenant": "acme",
        "user": "alice@acme.test",
    }
    assert "credit" in register.body["description"]
    assert (attach.method, attach.path) == ("PATCH", f"/api/v2/sessions-service/{SESSION}")
    assert attach.headers["authorization"] == f"Bearer {JWT}"
    assert attach.body == {"toolIds": ["tool-1"]}
    assert "tenant 'acme' (claim tenant_name), user 'alice@acme.test' (claim preferred_username)" in out
    assert "tool id tool-1" in out
    assert f"Attached tool tool-1 to session {SESSION}" in out
    assert "--keep-alive" in out


def test_accepts_the_tool_id_as_toolId(run_main: RunMain, env: dict[str, str], tais: FakeTais) -> None:
    tais.id_key = "toolId"
    code, _, _ = run_main(env)
    assert code == 0
    assert patches(tais)[0].body == {"toolIds": ["tool-1"]}


def test_overrides_and_tools_path(run_main: RunMain, env: dict[str, str], tais: FakeTais) -> None:
    # TAIS_TOOLS_PATH is used as given (the 404-tools case below shows a different one is really requested).
    env |= {"TAIS_TENANT": "globex", "TAIS_USER": "ops-bot", "TAIS_TOOLS_PATH": TOOLS_PATH.lstrip("/")}
    code, out, _ = run_main(env)
    assert code == 0
    assert posts(tais)[0].path == TOOLS_PATH
    assert (posts(tais)[0].body["tenant"], posts(tais)[0].body["user"]) == ("globex", "ops-bot")
    assert "tenant 'globex' (TAIS_TENANT), user 'ops-bot' (TAIS_USER)" in out


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(
            {"tenant": "acme", "preferred_username": "alice"},
            ("acme", "claim tenant", "alice", "claim preferred_username"),
            id="tenant-preferred_username",
        ),
        pytest.param(
            {"tenantName": "acme", "email": "a@acme.test", "sub": "42"},
            ("acme", "claim tenantName", "a@acme.test", "claim email"),
            id="tenantName-email",
        ),
        pytest.param(
            {"tid": "7d1c-guid", "upn": "bob@acme.test"},
            ("7d1c-guid", "claim tid", "bob@acme.test", "claim upn"),
            id="tid-upn",
        ),
        pytest.param(
            {"tenant": " ", "tenant_name": "acme", "unique_name": "carol"},
            ("acme", "claim tenant_name", "carol", "claim unique_name"),
            id="blank-claim-skipped",
        ),
        pytest.param(
            {"tenant": "acme", "name": "Dana", "sub": "u-1"}, ("acme", "claim tenant", "Dana", "claim name"), id="name"
        ),
        pytest.param({"tenant": "acme", "sub": "u-1"}, ("acme", "claim tenant", "u-1", "claim sub"), id="sub"),
    ],
)
def test_finds_tenant_and_user_in_the_usual_claims(payload: dict[str, Any], expected: tuple[str, ...]) -> None:
    config = load_config({"TAIS_JWT": make_jwt(payload)})
    identity = identify(config, datetime.now(UTC))
    assert (identity.tenant, identity.tenant_source, identity.user, identity.user_source) == expected
    assert identity.expires_at is None


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "tais.env"
    env_file.write_text(
        "TAIS_JWT=from-file\nTAIS_SESSION_ID=file-session\nTAIS_API_URL=http://file:5001\nTAIS_USER=\n"
        "OPENMETER_API_KEY=not-ours\n"
    )
    values = read_variables({"TAIS_API_URL": "http://env:5001", "TAIS_SESSION_ID": "  ", "PATH": "/bin"}, env_file)
    assert values == {"TAIS_JWT": "from-file", "TAIS_SESSION_ID": "file-session", "TAIS_API_URL": "http://env:5001"}


def test_defaults_for_the_api_and_the_server_url() -> None:
    config = load_config({"TAIS_JWT": "Bearer a.b.c", "MCP_PORT": "9100"})
    assert (config.jwt, config.api_url, config.server_url) == (
        "a.b.c",
        "http://localhost:5001",
        "http://localhost:9100",
    )
    assert (config.tools_path, config.renew_seconds, config.session_id) == (
        "/api/v2/tools-service/tools",
        3000.0,
        None,
    )
    assert "a.b.c" not in repr(config)


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        pytest.param(
            lambda t, e: t.tool_replies.append(Reply(401, {"title": "Unauthorized"})),
            ["401 Unauthorized", "POST", "TAIS_JWT"],
            id="401",
        ),
        pytest.param(lambda t, e: t.tool_replies.append(Reply(403, {})), ["403 Forbidden", "administrator"], id="403"),
        pytest.param(
            lambda t, e: e.update(TAIS_TOOLS_PATH="/api/v1/tools"), ["404 Not Found", "TAIS_TOOLS_PATH"], id="404-tools"
        ),
        pytest.param(
            lambda t, e: t.session_replies.append(Reply(404, {"detail": "no such\nsession"})),
            ["404 Not Found", "PATCH", "sessions-service/sess-42", '("no such session")', "TAIS_SESSION_ID"],
            id="404-session",
        ),
        pytest.param(
            lambda t, e: t.tool_replies.append(Reply(500, text="<h1>boom</h1>")),
            ["500 Internal Server Error", "logs"],
            id="500",
        ),
        pytest.param(
            lambda t, e: t.session_replies.append(Reply(503)),
            ["503 Service Unavailable", "PATCH", "logs"],
            id="503-patch",
        ),
        pytest.param(
            lambda t, e: t.tool_replies.append(Reply(200, text="<html>sign in</html>")),
            ["200 OK", "not JSON", "text/html", "TAIS_API_URL"],
            id="not-json",
        ),
        pytest.param(
            lambda t, e: t.tool_replies.append(Reply(201, {"name": "x"})),
            ["201 Created", "without a tool id"],
            id="no-id",
        ),
        pytest.param(
            lambda t, e: t.tool_replies.append(Reply(307, headers={"location": "https://tais.example/api"})),
            ["307 Temporary Redirect", "https://tais.example/api", "TAIS_API_URL"],
            id="redirect",
        ),
        pytest.param(
            lambda t, e: e.update(TAIS_API_URL=closed_url()),
            ["cannot reach the TAIS API", "TAIS_API_URL"],
            id="refused",
        ),
        pytest.param(
            lambda t, e: t.tool_replies.append(Reply(400, {"detail": f"bad token {JWT}"})),
            ["400 Bad Request", "***"],
            id="echoed-token",
        ),
    ],
)
def test_each_tais_failure_is_one_clear_line(
    run_main: RunMain,
    env: dict[str, str],
    tais: FakeTais,
    prepare: Callable[[FakeTais, dict[str, str]], None],
    expected: list[str],
) -> None:
    prepare(tais, env)
    code, _, err = run_main(env)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("register: ")
    for text in expected:
        assert text in err


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        pytest.param("closed", ["does not answer at", "/health", "uv run main.py", "PUBLIC_BASE_URL"], id="down"),
        pytest.param("tais", ["/health answered 404 Not Found", "PUBLIC_BASE_URL"], id="not-our-server"),
    ],
)
def test_checks_the_server_health_before_registering(
    run_main: RunMain, env: dict[str, str], tais: FakeTais, tais_url: str, server: str, expected: list[str]
) -> None:
    env["PUBLIC_BASE_URL"] = closed_url() if server == "closed" else tais_url
    code, _, err = run_main(env)
    assert code == 1 and err.count("\n") == 1
    for text in expected:
        assert text in err
    assert tais.requests() == []


def test_a_degraded_server_is_reported_as_running_without_its_download_store(
    run_main: RunMain, env: dict[str, str], tais: FakeTais, degraded_mcp_url: str
) -> None:
    code, _, err = run_main(env | {"PUBLIC_BASE_URL": degraded_mcp_url})
    assert code == 1 and err.count("\n") == 1
    assert err == (
        f"register: the ai-credits-mcp server at {degraded_mcp_url} is running but its download store (Redis) is "
        f"unreachable ({degraded_mcp_url}/health answered 503 Service Unavailable): start Redis or fix "
        "DOWNLOAD_STORE_URL, then run this again.\n"
    )
    assert tais.requests() == []


def test_an_unexpected_error_is_one_redacted_line(
    run_main: RunMain, env: dict[str, str], tais: FakeTais, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A surprise from a library (as httpx2's UnicodeEncodeError was), carrying the token in its message.
    def surprise(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError(f"header value {JWT!r} cannot be sent\nsecond line")

    monkeypatch.setattr(registration, "register_tool", surprise)
    code, _, err = run_main(env)  # run_main also checks: no traceback, no piece of the token
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("register: unexpected RuntimeError: header value '***' cannot be sent second line;")
    assert tais.requests() == []


def test_keep_alive_survives_an_unexpected_error(
    run_main: RunMain, env: dict[str, str], tais: FakeTais, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_register_tool = registration.register_tool
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> str:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError(f"odd {JWT}")
        return real_register_tool(*args, **kwargs)

    def sleep(seconds: float) -> None:
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(registration, "register_tool", flaky)
    code, out, err = run_main(env, "--keep-alive", "--interval", "120", sleep=sleep)
    assert (code, err) == (0, "")
    assert "renewal failed: unexpected RuntimeError: odd ***;" in out and "Retrying in 60 s." in out
    assert "renewed: tool tool-2 attached to session sess-42" in out


def test_health_check_does_not_receive_the_token(run_main: RunMain, env: dict[str, str], tais: FakeTais) -> None:
    seen: list[dict[str, str]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"status": "ok"}'})

    with serve_in_thread(app) as url:
        code, _, _ = run_main(env | {"PUBLIC_BASE_URL": url})
    assert code == 0 and len(tais.requests()) == 2
    assert len(seen) == 1 and "authorization" not in seen[0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({"TAIS_JWT": ""}, "TAIS_JWT is not set", id="missing"),
        pytest.param({"TAIS_JWT": make_jwt(claims(exp=int(time.time()) - 600))}, "TAIS_JWT expired at", id="expired"),
        pytest.param({"TAIS_JWT": "not-a-token"}, "TAIS_JWT is not a JWT", id="one-part"),
        pytest.param({"TAIS_JWT": "aaa.!!!!.ccc"}, "TAIS_JWT is malformed", id="bad-base64"),
        pytest.param({"TAIS_JWT": JWT + "\u2026"}, "TAIS_JWT is malformed: it holds characters", id="ellipsis"),
        pytest.param({"TAIS_JWT": "eyJh.eyJ0 ZW5hbnQiOiJhIn0.sig"}, "it holds characters", id="inner-blank"),
        pytest.param({"TAIS_JWT": "eyJh.WzEsMl0.sig"}, "TAIS_JWT is malformed", id="payload-not-object"),
        pytest.param({"TAIS_JWT": make_jwt(claims(exp="tomorrow"))}, "exp claim", id="exp-not-number"),
        pytest.param({"TAIS_JWT": make_jwt({"sub": "u"})}, "names no tenant", id="no-tenant"),
        pytest.param({"TAIS_API_URL": "localhost:5001"}, "TAIS_API_URL='localhost:5001' is not valid", id="api-url"),
        pytest.param({"PUBLIC_BASE_URL": "", "MCP_PORT": "eighty"}, "MCP_PORT='eighty' is not valid", id="port"),
        pytest.param({"TAIS_SESSION_ID": "two words"}, "is not a session id", id="session-id"),
        pytest.param({"TAIS_RENEW_SECONDS": "0"}, "TAIS_RENEW_SECONDS='0' is not valid", id="renew"),
        pytest.param({"TAIS_ENV_FILE": "/nonexistent/tais.env"}, "does not exist", id="env-file"),
    ],
)
def test_configuration_and_token_problems_stop_before_any_request(
    run_main: RunMain, values: dict[str, str], expected: str
) -> None:
    environ = {"TAIS_JWT": JWT, "TAIS_SESSION_ID": SESSION, "TAIS_API_URL": closed_url()} | values
    code, out, err = run_main(environ)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("register: ")
    assert expected in err
    assert out == ""


def test_expired_token_says_when(run_main: RunMain) -> None:
    expired = make_jwt(claims(exp=int(time.time()) - 2 * 3600))
    _, _, err = run_main({"TAIS_JWT": expired, "TAIS_SESSION_ID": SESSION})
    assert "(2 h ago): sign in to TAIS again" in err


def test_interval_without_keep_alive_is_refused(run_main: RunMain, env: dict[str, str], tais: FakeTais) -> None:
    code, _, err = run_main(env, "--interval", "5")
    assert code == 1 and "--interval only applies with --keep-alive" in err
    assert tais.requests() == []


def test_keep_alive_renews_rereads_the_env_file_and_retries_after_a_failure(
    run_main: RunMain, tais: FakeTais, tais_url: str, mcp_url: str, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    common = f"TAIS_API_URL={tais_url}\nPUBLIC_BASE_URL={mcp_url}\nTAIS_SESSION_ID={SESSION}\n"
    env_file.write_text(f"TAIS_JWT={JWT}\n{common}")
    fresh = make_jwt(claims(preferred_username="alice.fresh@acme.test"))
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 1:  # during the first wait: TAIS hiccups once, and the operator drops in a fresh token
            tais.tool_replies.append(Reply(503))
            env_file.write_text(f"TAIS_JWT={fresh}\n{common}")
        if len(delays) == 4:
            raise KeyboardInterrupt

    code, out, err = run_main({}, "--keep-alive", "--interval", "120", sleep=sleep)
    assert_no_jwt(out, err, jwt=fresh)

    assert (code, err) == (0, "")
    assert delays == [120, 60, 120, 120]  # a failed renewal is retried after a minute, not a whole interval
    assert [r.body.get("user") for r in posts(tais)] == ["alice@acme.test", *["alice.fresh@acme.test"] * 3]
    assert [r.headers["authorization"] for r in posts(tais)[1:]] == [f"Bearer {fresh}"] * 3
    assert [r.body for r in patches(tais)] == [
        {"toolIds": ["tool-1"]},
        {"toolIds": ["tool-2"]},
        {"toolIds": ["tool-3"]},
    ]
    assert "renewing every 2 min until Ctrl-C" in out
    assert "renewal failed: the TAIS API answered 503 Service Unavailable" in out and "Retrying in 60 s." in out
    assert "renewed: tool tool-3 attached to session sess-42; next renewal in 2 min" in out
    assert out.rstrip().endswith("stays attached until TAIS drops it (about an hour after the last renewal).")
    assert "register: stopped; tool tool-3" in out


# --- the script, as an operator runs it ------------------------------------------------------------------------


def script_env(env_file: Path, **values: str) -> dict[str, str]:
    """The machine's environment without any registration or server variables, reading only `env_file`."""
    prefixes = ("TAIS_", "OPENMETER_", "MCP_", "PUBLIC_BASE_URL")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return {**clean, "TAIS_ENV_FILE": str(env_file), **values}


def run_script(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(SCRIPT), *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def env_file(tmp_path: Path, tais_url: str, mcp_url: str) -> Path:
    path = tmp_path / "tais.env"
    path.write_text(f"TAIS_JWT={JWT}\nTAIS_API_URL={tais_url}\nPUBLIC_BASE_URL={mcp_url}\n")
    return path


def test_script_registers_from_its_env_file(env_file: Path, tais: FakeTais, tmp_path: Path) -> None:
    env_file.write_text(env_file.read_text() + f"TAIS_SESSION_ID={SESSION}\n")
    result = run_script(script_env(env_file), cwd=tmp_path)

    assert (result.returncode, result.stderr) == (0, "")
    assert_no_jwt(result.stdout, result.stderr)
    assert [(r.method, r.path) for r in tais.requests()] == [
        ("POST", TOOLS_PATH),
        ("PATCH", f"/api/v2/sessions-service/{SESSION}"),
    ]
    assert "Attached tool tool-1 to session sess-42." in result.stdout


def test_a_relative_env_file_is_read_from_where_the_operator_is(env_file: Path, tais: FakeTais, tmp_path: Path) -> None:
    env_file.write_text(env_file.read_text() + f"TAIS_SESSION_ID={SESSION}\n")
    env = script_env(env_file) | {"TAIS_ENV_FILE": env_file.name}  # relative to cwd, not to the repository
    result = run_script(env, cwd=env_file.parent)
    assert (result.returncode, result.stderr) == (0, "")
    assert "Attached tool tool-1 to session sess-42." in result.stdout
    assert [r.method for r in tais.requests()] == ["POST", "PATCH"]


def test_script_failure_is_one_line(env_file: Path, tais: FakeTais, tmp_path: Path) -> None:
    tais.tool_replies.append(Reply(401, {"title": "Unauthorized"}))
    result = run_script(script_env(env_file, TAIS_SESSION_ID=SESSION), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("register: the TAIS API answered 401")
    assert "Traceback" not in result.stderr
    assert_no_jwt(result.stdout, result.stderr)


def test_script_with_a_non_ascii_token_fails_in_one_line(env_file: Path, tais: FakeTais, tmp_path: Path) -> None:
    # A token copied with a trailing ellipsis used to reach httpx2 and end in a 37-line UnicodeEncodeError.
    copied = JWT + "\u2026"
    env_file.write_text(env_file.read_text().replace(JWT, copied) + f"TAIS_SESSION_ID={SESSION}\n")
    result = run_script(script_env(env_file), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("register: TAIS_JWT is malformed")
    assert "Traceback" not in result.stderr
    assert_no_jwt(result.stdout, result.stderr, jwt=copied)
    assert tais.requests() == []


def test_script_without_session_id_and_no_terminal_stops(env_file: Path, tais: FakeTais, tmp_path: Path) -> None:
    result = run_script(script_env(env_file), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "register: TAIS_SESSION_ID is not set and there is no terminal to ask for it: set TAIS_SESSION_ID in .env "
        "or the environment.\n"
    )
    assert tais.requests() == []
    assert_no_jwt(result.stdout, result.stderr)


@contextlib.contextmanager
def on_terminal(env: dict[str, str], cwd: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`bash scripts/register.sh` with a pseudo-terminal as stdin, stdout and stderr: yields it and the terminal."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [BASH, str(SCRIPT)],
        env=env,
        cwd=cwd,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    try:
        yield proc, primary
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_script_asks_for_the_session_id_on_a_terminal(env_file: Path, tais: FakeTais, tmp_path: Path) -> None:
    with on_terminal(script_env(env_file), tmp_path) as (proc, primary):
        screen = read_terminal(primary, until=b"session id to attach the tool to: ")
        os.write(primary, b"sess-typed\n")
        screen += read_terminal(primary)
        assert proc.wait(timeout=30) == 0
    text = screen.decode(errors="replace")
    assert_no_jwt(text)
    assert "Attached tool tool-1 to session sess-typed." in text
    assert patches(tais)[0].path == "/api/v2/sessions-service/sess-typed"


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        pytest.param("PUBLIC_BASE_URL", "the MCP server does not answer at", id="server-down"),
        pytest.param("degraded", "download store (Redis) is unreachable", id="server-degraded"),
        pytest.param("TAIS_API_URL", "cannot reach the TAIS API at", id="tais-down"),
    ],
)
def test_script_checks_the_server_and_tais_before_asking_for_the_session_id(
    env_file: Path, tais: FakeTais, tmp_path: Path, degraded_mcp_url: str, where: str, expected: str
) -> None:
    if where == "degraded":
        env = script_env(env_file, PUBLIC_BASE_URL=degraded_mcp_url)
    else:
        env = script_env(env_file, **{where: closed_url()})  # the environment wins over the env file
    with on_terminal(env, tmp_path) as (proc, primary):
        screen = read_terminal(primary)  # until it exits; a prompt would wait for input and time out here
        code = proc.wait(timeout=30)
    text = screen.decode(errors="replace")
    assert code == 1, text
    assert "session id to attach" not in text
    assert expected in text and "Traceback" not in text
    assert_no_jwt(text)
    assert tais.requests() == []


def read_terminal(fd: int, until: bytes | None = None, timeout: float = 30) -> bytes:
    """What the program wrote to the terminal, up to `until` or until it closed its side (EIO on Linux)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (until is None or until not in seen):
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    if until is not None:
        assert until in seen, seen.decode(errors="replace")
    return seen


def test_script_keep_alive_renews_until_ctrl_c(env_file: Path, tais: FakeTais, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [BASH, str(SCRIPT), "--keep-alive", "--interval", "1"],
        env=script_env(env_file, TAIS_SESSION_ID=SESSION),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so Ctrl-C can be sent to it as a terminal would
    )
    try:
        deadline = time.monotonic() + 20
        # Wait for a 4th wiring: the 3rd renewal's "renewed" line is printed only after its PATCH has been answered.
        while len(patches(tais)) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 130), err
    assert_no_jwt(out, err)
    assert "Traceback" not in err and err == ""
    assert len(posts(tais)) >= 3 and len(patches(tais)) >= 3
    assert [r.body for r in patches(tais)[:3]] == [{"toolIds": [f"tool-{n}"]} for n in (1, 2, 3)]
    assert "renewing every 1 s until Ctrl-C" in out
    assert out.count(" renewed: tool ") >= 2
    assert "register: stopped; tool tool-" in out


def test_script_says_when_uv_is_missing(env_file: Path, tmp_path: Path) -> None:
    result = run_script(script_env(env_file, PATH="/usr/bin:/bin"), cwd=tmp_path)
    assert result.returncode == 127
    assert result.stderr.startswith("register: uv is not installed") and result.stderr.count("\n") == 1


def test_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")


def test_the_server_url_for_tais_wins_over_the_download_host() -> None:
    """PUBLIC_BASE_URL is where browsers fetch downloads and is refused on /mcp (issue 16); TAIS_SERVER_URL names
    where TAIS reaches the server."""
    values = {"TAIS_JWT": "a.b.c", "PUBLIC_BASE_URL": "https://ai-credits.example.com"}
    assert load_config(values).server_url == "https://ai-credits.example.com"
    values["TAIS_SERVER_URL"] = "http://ai-credits.internal:8765/"
    assert load_config(values).server_url == "http://ai-credits.internal:8765"
