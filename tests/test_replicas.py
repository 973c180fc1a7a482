"""Several replicas behind one address: the Redis download store, against a real `redis-server` on loopback, and two
`main.py` processes sharing it (a tool call on one, the download from the other, expiry, a Redis restart).

Each test starts its own `redis-server` on a free port (no persistence, scratch directory) and stops it at the end;
the system service is never used. Without `redis-server` these tests are skipped, unless `CI` is set: there they
must run (`.ci/run` installs it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx2
import pytest
import redis

from ai_credit_usage.answers.downloads import (
    REDIS_KEY_PREFIX,
    UNAVAILABLE,
    DownloadStoreUnavailable,
    DownloadTooLarge,
    RedisDownloadStore,
    describe_store_url,
)
from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from ai_credit_usage.runtime.settings import ConfigError, load_settings
from tests.conftest import API_KEY, NOW, FakeClock, ServerStarter, call_tool, text_of
from tests.servers import free_port, serve_in_thread

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")
REDIS_PASSWORD = "redis-pw-7d1f0c"  # must never show up in a log line or a message
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
LOAD_BALANCER = "http://ai-credits.lb.test"
OUTAGE_BOUND_SECONDS = 10  # an outage must turn into an answer well within this, never a hang


def wait_until(condition, *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s")


class RedisServer:
    """A private `redis-server` on 127.0.0.1:<port>: no RDB, no AOF, a password, its files in a scratch directory."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable, self.directory = executable, directory
        self.port = free_port()
        self.url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=REDIS_PASSWORD, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        options = {
            "port": self.port,
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "requirepass": REDIS_PASSWORD,
            "dir": self.directory,
        }
        self.process = subprocess.Popen(
            [self.executable, *(part for name, value in options.items() for part in (f"--{name}", str(value)))],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def answers() -> bool:
            assert self.process is not None and self.process.poll() is None, (self.directory / "redis.log").read_text()
            with contextlib.suppress(redis.RedisError), self.client() as client:
                return bool(client.ping())
            return False

        wait_until(answers, timeout=10, what=f"redis-server PING on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; .ci/run installs it (apt-get install -y redis-server)")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server); these tests run in CI")
    directory.mkdir()
    server = RedisServer(REDIS_SERVER, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


# --- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis:/nohost",
        "redis://:pw@127.0.0.1:notaport/0",
        "redis://:pw@127.0.0.1:6379/zero",
        "http://:pw@127.0.0.1:6379",
        "memcached://127.0.0.1",
        "unix://",
    ],
)
def test_a_malformed_store_url_stops_start_up_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, openmeter_api_key=API_KEY, download_store_url=url)
    message = str(raised.value)
    assert message.startswith("DOWNLOAD_STORE_URL is not valid: expected redis://")
    assert "\n" not in message and "pw" not in message


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1", "redis://:pw@redis.internal:6380/2", "rediss://u:pw@r.example:6380", "unix:///r.sock"]
)
def test_valid_store_urls_are_accepted_and_kept_secret(url: str) -> None:
    settings = load_settings(_env_file=None, openmeter_api_key=API_KEY, download_store_url=url)
    assert settings.download_store_url is not None and settings.download_store_url.get_secret_value() == url
    assert "pw" not in repr(settings) and "pw" not in describe_store_url(url)


def test_no_store_url_is_the_memory_store() -> None:
    assert load_settings(_env_file=None, openmeter_api_key=API_KEY).download_store_url is None
    assert describe_store_url(None).startswith("memory")
    assert describe_store_url("redis://:pw@redis.internal:6380/2") == "redis://redis.internal:6380/2"


# --- the store against a real Redis -------------------------------------------------------------------------------


async def test_two_stores_share_every_link_and_redis_holds_the_expiry(redis_server: RedisServer) -> None:
    clock = FakeClock(NOW)
    replica_a = RedisDownloadStore(redis_server.url, 600, clock)
    replica_b = RedisDownloadStore(redis_server.url, 600, clock)
    try:
        token, made = await replica_a.put(b"PK workbook", filename="a.xlsx", media_type=XLSX, tenant="acme")
        assert len(token) >= 43 and made.expires_at == NOW + timedelta(seconds=600)
        assert await replica_b.get(token) == made
        assert await replica_b.get("A" * 43) is None
        assert await replica_b.get("x" * 1000) is None  # not even asked
        with redis_server.client() as client:
            assert 595_000 < client.pttl(REDIS_KEY_PREFIX + token) <= 600_000  # Redis deletes it, not we
            client.delete(REDIS_KEY_PREFIX + token)  # what Redis does when the TTL runs out
            client.set(REDIS_KEY_PREFIX + "garbled", b"no header here")
        assert await replica_a.get(token) is None  # nothing cached: every get asks Redis
        assert await replica_a.get("garbled") is None
        assert await replica_a.purge_expired() == 0
        assert await replica_a.healthy()
    finally:
        await replica_a.aclose()
        await replica_b.aclose()


async def test_a_single_workbook_over_the_budget_is_refused(redis_server: RedisServer) -> None:
    store = RedisDownloadStore(redis_server.url, 600, FakeClock(NOW), max_bytes=1024 * 1024)
    try:
        with pytest.raises(DownloadTooLarge, match="shorter window"):
            await store.put(b"x" * (1024 * 1024 + 1), filename="huge.xlsx", media_type=XLSX, tenant="acme")
    finally:
        await store.aclose()


async def test_one_tenant_cannot_evict_another_tenants_link_in_redis(redis_server: RedisServer) -> None:
    """Issue 16 F4, as docs/replicas.md deploys Redis (maxmemory, volatile-ttl): before, Redis itself evicted the
    link closest to expiry, whatever its tenant. Now the store keeps within DOWNLOAD_STORE_MAX_BYTES, fairly, and
    Redis's limit above it is never reached."""
    mb = 1024 * 1024
    with redis_server.client() as client:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 16 * mb)  # room for the 4 MiB budget and Redis's own buffers
        client.config_set("maxmemory-policy", "volatile-ttl")
    clock = FakeClock(NOW)
    replica_a = RedisDownloadStore(redis_server.url, 600, clock, max_bytes=4 * mb)
    replica_b = RedisDownloadStore(redis_server.url, 600, clock, max_bytes=4 * mb)
    try:
        acme, _ = await replica_a.put(b"a" * mb, filename="a.xlsx", media_type=XLSX, tenant="acme")
        globex = [
            (await replica_b.put(bytes([i]) * mb, filename="g.xlsx", media_type=XLSX, tenant="globex"))[0]
            for i in range(40)
        ]
        assert await replica_b.get(acme) is not None  # acme holds 1 MiB, under its half of 4 MiB
        assert [(await replica_a.get(token)) is not None for token in globex] == [False] * 37 + [True] * 3
        initech, _ = await replica_a.put(b"i" * (2 * mb), filename="i.xlsx", media_type=XLSX, tenant="initech")
        assert [(await replica_a.get(token)) is not None for token in globex] == [False] * 39 + [True]  # 3 over 4/3
        assert await replica_b.get(acme) is not None and await replica_b.get(initech) is not None
    finally:
        await replica_a.aclose()
        await replica_b.aclose()


async def test_a_link_no_one_can_make_room_for_is_refused_in_redis(redis_server: RedisServer) -> None:
    kb = 1000
    store = RedisDownloadStore(redis_server.url, 600, FakeClock(NOW), max_bytes=4000 * kb)
    try:
        kept = [
            (await store.put(b"x" * (1300 * kb), filename="k.xlsx", media_type=XLSX, tenant=tenant))[0]
            for tenant in ("acme", "globex")
        ]
        with pytest.raises(DownloadTooLarge, match="try again in a few minutes"):  # over its 4/3 share, no one else is
            await store.put(b"x" * (1500 * kb), filename="i.xlsx", media_type=XLSX, tenant="initech")
        assert all([await store.get(token) for token in kept])
    finally:
        await store.aclose()


async def test_an_outage_is_a_quick_clear_error_and_a_restart_heals(redis_server: RedisServer) -> None:
    store = RedisDownloadStore(redis_server.url, 600, FakeClock(NOW))
    try:
        token, _ = await store.put(b"before", filename="a.xlsx", media_type=XLSX, tenant="acme")
        redis_server.stop()
        with anyio.fail_after(OUTAGE_BOUND_SECONDS):
            with pytest.raises(DownloadStoreUnavailable, match=re.escape(UNAVAILABLE)):
                await store.put(b"during", filename="b.xlsx", media_type=XLSX, tenant="acme")
            with pytest.raises(DownloadStoreUnavailable):
                await store.get(token)
            assert not await store.healthy()
        redis_server.start()  # same port, empty: a Redis without persistence forgets its links
        assert await store.healthy()  # the pool's dead connection is replaced, not reported
        assert await store.get(token) is None
        token, _ = await store.put(b"after", filename="c.xlsx", media_type=XLSX, tenant="acme")
        assert (await store.get(token)).content == b"after"  # type: ignore[union-attr]
    finally:
        await store.aclose()


async def test_health_checks_during_an_outage_log_once_and_the_recovery_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisDownloadStore(redis_server.url, 600, FakeClock(NOW))
    try:
        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="ai_credit_usage.answers.downloads"):
            assert [await store.healthy() for _ in range(5)] == [False] * 5
            redis_server.start()
            assert await store.healthy() and await store.healthy()
        lines = [record.getMessage() for record in caplog.records]
        assert len([line for line in lines if line.startswith("download store: Redis ping failed")]) == 1, lines
        assert lines.count("download store: Redis answers again") == 1
    finally:
        await store.aclose()


async def test_an_unreachable_store_is_named_at_start_up(
    start_server: ServerStarter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ai_credit_usage.server"):
        url = start_server(download_store_url=f"redis://127.0.0.1:{free_port()}/0")
    assert "the download store (DOWNLOAD_STORE_URL) is unreachable at start-up" in caplog.text
    assert httpx2.get(f"{url}/health").status_code == 503


async def test_a_redis_that_stops_answering_never_hangs_a_call(redis_server: RedisServer) -> None:
    # SIGSTOP: the port still accepts connections and requests, but nothing answers, as with a wedged Redis or a
    # dropped network path. Only the timeouts can end the wait (made short here; 2 s in production).
    store = RedisDownloadStore(redis_server.url, 600, FakeClock(NOW), timeout_seconds=0.3)
    assert redis_server.process is not None
    try:
        token, _ = await store.put(b"before", filename="a.xlsx", media_type=XLSX, tenant="acme")
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert not await store.healthy()
            with pytest.raises(DownloadStoreUnavailable):
                await store.get(token)
            with pytest.raises(DownloadStoreUnavailable):
                await store.put(b"during", filename="b.xlsx", media_type=XLSX, tenant="acme")
            assert time.monotonic() - started < 3 * 0.3 * 3 + 1
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert await store.healthy()
        assert (await store.get(token)).content == b"before"  # type: ignore[union-attr]
    finally:
        await store.aclose()


# --- two replicas, two processes ----------------------------------------------------------------------------------


class Replica:
    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name, self.log_path = name, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "main.py")],
                env={**env, "MCP_PORT": str(self.port)},
                cwd=log_path.parent,  # a scratch directory: no developer's .env plays a part
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> httpx2.Response:
        return httpx2.get(f"{self.url}/health", timeout=OUTAGE_BOUND_SECONDS)

    def wait_listening(self) -> None:
        def up() -> bool:
            assert self.process.poll() is None, f"replica {self.name} exited:\n{self.log()}"
            try:
                self.health()
            except httpx2.TransportError:
                return False
            return True

        wait_until(up, timeout=30, what=f"replica {self.name} /health")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # uvicorn shuts down gracefully, closing its Redis pool
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("replicas") / "redis") as server:
        yield server


@pytest.fixture(scope="module")
def shared_openmeter() -> Iterator[tuple[OpenMeterStandIn, str]]:
    openmeter = OpenMeterStandIn(api_key=API_KEY)
    openmeter.add_meter(dict(AI_CREDITS_METER))
    with serve_in_thread(openmeter.app) as url:
        yield openmeter, url


@pytest.fixture(scope="module")
def replicas(
    shared_redis: RedisServer, shared_openmeter: tuple[OpenMeterStandIn, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica]]:
    """Two `main.py` processes as an operator runs them behind a load balancer: stateless, one Redis, one public URL.

    Module-scoped because each process takes seconds to import its stack; every test leaves Redis running.
    """
    tmp_path = tmp_path_factory.mktemp("replicas")
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENMETER_", "MCP_", "PUBLIC_", "TENANT_", "ROLE_", "DOWNLOAD_"))
    }
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        "OPENMETER_URL": shared_openmeter[1],
        "OPENMETER_API_KEY": API_KEY,
        "MCP_STATELESS": "true",
        "DOWNLOAD_STORE_URL": shared_redis.url,
        "PUBLIC_BASE_URL": LOAD_BALANCER,
    }
    started: list[Replica] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            started.append(Replica(name, env, tmp_path / name / "replica.log"))
        for replica in started:
            replica.wait_listening()
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()
    for replica in started:
        log = replica.log()
        assert "Traceback" not in log, log
        assert REDIS_PASSWORD not in log and API_KEY not in log
        assert "downloads in redis://127.0.0.1:" in log and "stateless" in log


def download_path(text: str) -> str:
    match = re.search(rf"\]\({re.escape(LOAD_BALANCER)}(/download/[\w-]+)\)", text)
    assert match, text
    return match.group(1)


async def test_a_link_made_on_one_replica_downloads_from_the_other(
    replicas: tuple[Replica, Replica], shared_redis: RedisServer, shared_openmeter: tuple[OpenMeterStandIn, str]
) -> None:
    a, b = replicas
    openmeter, redis_server = shared_openmeter[0], shared_redis
    # The replicas run on real time (their clock is not injectable across processes), so the data is recent.
    openmeter.ingest(make_event(tenant="acme", credits=42.5, time=datetime.now(UTC) - timedelta(hours=1)))
    assert a.health().json() == {"status": "ok"} and b.health().json() == {"status": "ok"}

    result = await call_tool(a.url, "get_credit_usage_by_tenant")
    assert not result.is_error, text_of(result)
    assert "| acme | 42.50 |" in text_of(result)
    path = download_path(text_of(result))
    response = httpx2.get(b.url + path)
    assert response.status_code == 200 and response.headers["content-type"] == XLSX
    assert response.content.startswith(b"PK")
    assert httpx2.get(a.url + path).content == response.content

    # Expiry. Redis keeps time by its own clock, so the tests' FakeClock cannot move it, and waiting out even a short
    # real TTL would make the test slow and timing-dependent. Instead: check that the replica gave the key the full
    # TTL as Redis expiry, then shorten that expiry to 1 ms (PEXPIRE), which is exactly what the passage of time does
    # to the key, and poll (bounded) until both replicas answer 404.
    key = REDIS_KEY_PREFIX + path.rsplit("/", 1)[1]
    with redis_server.client() as client:
        assert 590_000 < client.pttl(key) <= 600_000
        assert client.pexpire(key, 1)
    for replica in (a, b):
        wait_until(
            lambda replica=replica: httpx2.get(replica.url + path).status_code == 404,
            timeout=5,
            what=f"404 on replica {replica.name} after expiry",
        )
    assert httpx2.get(b.url + path).text == "Not Found"


async def test_a_redis_restart_degrades_then_heals_both_replicas(
    replicas: tuple[Replica, Replica], shared_redis: RedisServer
) -> None:
    a, b = replicas
    redis_server = shared_redis
    before = download_path(text_of(await call_tool(a.url, "get_credit_usage_by_tenant")))
    assert httpx2.get(b.url + before).status_code == 200

    redis_server.stop()
    started = time.monotonic()
    with anyio.fail_after(OUTAGE_BOUND_SECONDS):
        during = await call_tool(b.url, "get_credit_usage_summary")
    assert during.is_error and text_of(during) == UNAVAILABLE
    for replica in (a, b):
        health = replica.health()
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "download_store": "unreachable"}
    unavailable = httpx2.get(a.url + before, timeout=OUTAGE_BOUND_SECONDS)
    assert (unavailable.status_code, unavailable.text) == (503, UNAVAILABLE)  # not 404: the link may come back
    assert time.monotonic() - started < OUTAGE_BOUND_SECONDS

    redis_server.start()  # same port; no persistence, so links made before the outage are gone
    for replica in (a, b):
        wait_until(lambda replica=replica: replica.health().status_code == 200, timeout=10, what="healthy again")
    assert httpx2.get(a.url + before).status_code == 404
    after = await call_tool(b.url, "get_credit_events")
    assert not after.is_error, text_of(after)
    assert httpx2.get(a.url + download_path(text_of(after))).status_code == 200
    assert "Redis store failed (ConnectionError" in b.log()
