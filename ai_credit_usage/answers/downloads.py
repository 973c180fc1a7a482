"""Short-lived download links: finished workbooks behind unguessable tokens, in one of two stores.

`DownloadStore` is the interface the tools and the `/download` route use. `MemoryDownloadStore` (the default) keeps
the bytes in this process: fast, nothing to run, but a link works only on the replica that made it.
`RedisDownloadStore` (`DOWNLOAD_STORE_URL=redis://…`) keeps them in Redis under the token with the TTL as Redis
expiry, so every replica serves every link and Redis itself deletes each workbook when its link expires.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ai_credit_usage.runtime.errors import UserFacingError
from ai_credit_usage.runtime.settings import DEFAULT_DOWNLOAD_STORE_MAX_BYTES
from ai_credit_usage.runtime.telemetry import downloads_expired
from ai_credit_usage.runtime.window import Clock

logger = logging.getLogger(__name__)

REDIS_KEY_PREFIX = "ai-credits:download:"
# Short enough that a Redis outage turns into a clear error within seconds, never a hung tool call or download.
REDIS_TIMEOUT_SECONDS = 2.0
MAX_TOKEN_LENGTH = 100  # ours are 43 characters; anything much longer is not worth a round trip
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")  # base64url: what secrets.token_urlsafe makes
UNAVAILABLE = "The download store is unavailable right now; try again in a few minutes."

T = TypeVar("T")


@dataclass(frozen=True)
class Download:
    content: bytes
    filename: str
    media_type: str
    expires_at: datetime


class DownloadTooLarge(UserFacingError):
    """A single workbook larger than the whole store's budget."""


class DownloadStoreUnavailable(UserFacingError):
    """The shared store (Redis) cannot be reached or did not answer in time."""

    def __init__(self) -> None:
        super().__init__(UNAVAILABLE)


class DownloadStore(Protocol):
    async def put(self, content: bytes, *, filename: str, media_type: str, tenant: str) -> tuple[str, Download]:
        """Keep `content` for the TTL; return the new token and what a `get` will return. May raise UserFacingError.

        `tenant` is whose link it is: when the budget is reached, only links of tenants holding more than their
        share of it give way (issue 16 F4)."""
        ...

    async def get(self, token: str) -> Download | None:
        """The download, or None for an unknown or expired token. Raises DownloadStoreUnavailable on an outage."""
        ...

    async def purge_expired(self) -> int:
        """Free expired entries now; return how many."""
        ...

    async def healthy(self) -> bool:
        """Whether the store can be reached right now; answers within a few seconds."""
        ...

    async def aclose(self) -> None: ...


def open_download_store(
    url: str | None, ttl_seconds: int, clock: Clock, *, max_bytes: int = DEFAULT_DOWNLOAD_STORE_MAX_BYTES
) -> DownloadStore:
    """The store `DOWNLOAD_STORE_URL` names: Redis for a URL, this process's memory without one."""
    if url is None:
        return MemoryDownloadStore(ttl_seconds, clock, max_bytes=max_bytes)
    return RedisDownloadStore(url, ttl_seconds, clock, max_bytes=max_bytes)


def describe_store_url(url: str | None) -> str:
    """Where downloads live, for the start-up log line: never the password."""
    if url is None:
        return "memory (this process only)"
    parts = urlsplit(url)
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}{parts.path}"
    return f"{parts.scheme}://{where}"


def _store_full() -> DownloadTooLarge:
    return DownloadTooLarge(
        "The download store is full with other tenants' recent files right now; try again in a few minutes, "
        "or ask for a shorter window."
    )


def _too_large(content: bytes, max_bytes: int) -> DownloadTooLarge:
    return DownloadTooLarge(
        f"The Excel file for this window would be {len(content) / 1e6:,.0f} MB, more than this server can "
        "hold; ask for a shorter window."
    )


class MemoryDownloadStore:
    """In this process: an entry lives `ttl` seconds by the injected clock, and the store holds at most `max_bytes`.

    Expired entries are deleted (their bytes freed) whenever the store is touched and by `purge_expired()`, which the
    server also runs periodically, so memory does not wait for the next request.

    When a new link would take the store past its budget, links give way fairly (issue 16 F4): the budget is split
    evenly among the tenants holding links (the one storing now included), and only a tenant holding more than its
    share loses links, its oldest first, the largest holder first. A tenant's calls therefore never evict another
    tenant's unexpired link while that tenant is within its share; when no one else is over, a link that would take
    its own tenant past its share is refused with a sentence instead.

    A plain lock, not an asyncio one: tests and the soak script read it from other threads, and no operation awaits
    while holding it.
    """

    def __init__(self, ttl_seconds: int, clock: Clock, *, max_bytes: int = DEFAULT_DOWNLOAD_STORE_MAX_BYTES) -> None:
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._max_bytes = max_bytes
        self._entries: dict[str, Download] = {}  # insertion order is expiry order
        self._tenant_of: dict[str, str] = {}
        self._links: dict[str, dict[str, None]] = {}  # tenant -> its tokens, oldest first
        self._held: dict[str, int] = {}  # tenant -> bytes
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes_held(self) -> int:
        return self._bytes

    async def put(self, content: bytes, *, filename: str, media_type: str, tenant: str) -> tuple[str, Download]:
        if len(content) > self._max_bytes:
            raise _too_large(content, self._max_bytes)
        token = secrets.token_urlsafe(32)  # 256 random bits
        download = Download(content, filename, media_type, self._clock() + self._ttl)
        with self._lock:
            self._purge_locked()
            while self._bytes + len(content) > self._max_bytes:
                victim = self._over_share_locked(tenant, len(content))
                if victim is None:
                    raise _store_full()
                self._remove_locked(next(iter(self._links[victim])))  # its oldest link expires soonest anyway
                logger.warning(
                    "download store at its %d-byte budget: dropped the oldest link of a tenant over its share",
                    self._max_bytes,
                )
            self._entries[token] = download
            self._tenant_of[token] = tenant
            self._links.setdefault(tenant, {})[token] = None
            self._held[tenant] = self._held.get(tenant, 0) + len(content)
            self._bytes += len(content)
        return token, download

    def _over_share_locked(self, tenant: str, incoming: int) -> str | None:
        """The tenant that should give up a link: of those holding links and more than their share of the budget
        (counting the link `tenant` is storing), the largest holder, `tenant` itself on a tie; None if no one."""
        holders = set(self._held) | {tenant}
        share = self._max_bytes / len(holders)
        candidates = [
            (held + (incoming if holder == tenant else 0), holder == tenant, holder)
            for holder, held in self._held.items()
            if held + (incoming if holder == tenant else 0) > share
        ]
        return max(candidates)[2] if candidates else None

    async def get(self, token: str) -> Download | None:
        with self._lock:
            self._purge_locked()
            return self._entries.get(token)

    async def purge_expired(self) -> int:
        with self._lock:
            return self._purge_locked()

    async def healthy(self) -> bool:
        return True

    async def aclose(self) -> None:
        with self._lock:
            self._entries.clear()
            self._tenant_of.clear()
            self._links.clear()
            self._held.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _purge_locked(self) -> int:
        # Every entry gets the same TTL, so insertion order is expiry order: stop at the first live one.
        now = self._clock()
        expired = []
        for token, download in self._entries.items():
            if download.expires_at > now:
                break
            expired.append(token)
        for token in expired:
            self._remove_locked(token)
        if expired:
            downloads_expired.add(len(expired))
        return len(expired)

    def _remove_locked(self, token: str) -> None:
        size = len(self._entries.pop(token).content)
        tenant = self._tenant_of.pop(token)
        del self._links[tenant][token]
        self._held[tenant] -= size
        if not self._links[tenant]:  # a tenant without links no longer counts for the shares
            del self._links[tenant], self._held[tenant]
        self._bytes -= size


# One atomic put with the memory store's fairness (issue 16 F4), for every replica at once. KEYS: the index (a sorted
# set, token -> expiry in ms by Redis's clock), the meta hash (token -> "<bytes>:<tenant>"), the new entry's key.
# ARGV: token, tenant, bytes, ttl in ms, budget in bytes, value, entry key prefix. Returns 1 stored, 0 token
# collision, -1 no room (no other tenant over its share).
_FAIR_PUT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for _, token in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do redis.call('HDEL', KEYS[2], token) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local tenant, size, ttl, budget = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local links, held, total = {}, {}, 0
for _, token in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local meta = redis.call('HGET', KEYS[2], token)
  if meta then
    local colon = string.find(meta, ':', 1, true)
    local bytes, owner = tonumber(string.sub(meta, 1, colon - 1)), string.sub(meta, colon + 1)
    if links[owner] == nil then links[owner], held[owner] = {}, 0 end
    table.insert(links[owner], {token, bytes})
    held[owner] = held[owner] + bytes
    total = total + bytes
  end
end
local given = {}
while total + size > budget do
  local holders = held[tenant] == nil and 1 or 0
  for _ in pairs(held) do holders = holders + 1 end
  local share = budget / holders
  local victim, most = nil, -1
  for owner, bytes in pairs(held) do
    local counted = bytes + (owner == tenant and size or 0)
    if counted > share and (counted > most or (counted == most and owner == tenant)) then
      victim, most = owner, counted
    end
  end
  if victim == nil then return -1 end
  local index = (given[victim] or 0) + 1
  given[victim] = index
  local link = links[victim][index]
  redis.call('DEL', ARGV[7] .. link[1])
  redis.call('ZREM', KEYS[1], link[1])
  redis.call('HDEL', KEYS[2], link[1])
  held[victim], total = held[victim] - link[2], total - link[2]
  if index == #links[victim] then held[victim] = nil end
end
if not redis.call('SET', KEYS[3], ARGV[6], 'PX', ttl, 'NX') then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], size .. ':' .. tenant)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"""


class RedisDownloadStore:
    """In Redis, shared by every replica: one key per token, `SET … PX ttl NX`, so Redis deletes it on expiry.

    The value is a one-line JSON header (filename, media type, expiry) then the workbook bytes: one key and one
    command, so a workbook can never be stored without its expiry. Every `get` asks Redis; nothing is cached here,
    so no replica serves a link that has expired or was never issued. Redis's own clock decides expiry (the injected
    clock only computes the expiry shown in the answer).

    `max_bytes` is the budget of all replicas together, shared as fairly as in the memory store: a Lua script
    indexes each link's size and tenant (a sorted set by expiry, a hash) and, in the same atomic step as the `SET`,
    drops only links of tenants over their share. Redis's own `maxmemory` eviction would pick the link closest to
    expiry whatever its tenant (issue 16 F4): give Redis room above `max_bytes` so it never has to.
    """

    def __init__(
        self,
        url: str,
        ttl_seconds: int,
        clock: Clock,
        *,
        max_bytes: int = DEFAULT_DOWNLOAD_STORE_MAX_BYTES,
        timeout_seconds: float = REDIS_TIMEOUT_SECONDS,
        key_prefix: str = REDIS_KEY_PREFIX,
    ) -> None:
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._max_bytes = max_bytes
        self._timeout = timeout_seconds
        self._prefix = key_prefix
        self._index, self._meta = key_prefix + "!index", key_prefix + "!meta"  # "!" is in no token
        self._reachable = True  # as the last health check found it; it only decides what is logged
        # One immediate retry: after a Redis restart the pooled connection is dead, and the retry reconnects. During
        # an outage that is two quick refusals (or two timeouts), not the client's default backoff of many seconds.
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 1),
        )
        self._fair_put = self._redis.register_script(_FAIR_PUT)

    def key(self, token: str) -> str:
        return self._prefix + token

    async def put(self, content: bytes, *, filename: str, media_type: str, tenant: str) -> tuple[str, Download]:
        if len(content) > self._max_bytes:
            raise _too_large(content, self._max_bytes)
        token = secrets.token_urlsafe(32)  # 256 random bits
        download = Download(content, filename, media_type, self._clock() + self._ttl)
        header = {"filename": filename, "media_type": media_type, "expires_at": download.expires_at.isoformat()}
        value = json.dumps(header).encode() + b"\n" + content
        ttl_ms = int(self._ttl.total_seconds() * 1000)
        keys = (self._index, self._meta, self.key(token))
        arguments = (token, tenant, len(content), ttl_ms, self._max_bytes, value, self._prefix)
        stored = await self._call("store", lambda: self._fair_put(keys=keys, args=arguments))
        if stored == -1:
            raise _store_full()
        if not stored:  # NX: a 256-bit token collision; never overwrite someone else's link
            logger.error("download store: token collision in Redis; refusing to overwrite")
            raise DownloadStoreUnavailable()
        return token, download

    async def get(self, token: str) -> Download | None:
        if not token or len(token) > MAX_TOKEN_LENGTH or not _TOKEN.match(token):
            return None
        value = await self._call("read", lambda: self._redis.get(self.key(token)))
        if value is None:
            return None
        try:
            if not isinstance(value, bytes):  # decode_responses is off: Redis hands back bytes
                raise TypeError(type(value).__name__)
            header_line, content = value.split(b"\n", 1)
            header = json.loads(header_line)
            return Download(
                content, header["filename"], header["media_type"], datetime.fromisoformat(header["expires_at"])
            )
        except (ValueError, KeyError, TypeError):
            logger.warning("download store: an entry in Redis could not be read; answering as unknown")
            return None

    async def purge_expired(self) -> int:
        return 0  # Redis deletes expired keys itself

    async def healthy(self) -> bool:
        try:
            # One attempt's worth of time: load balancers' health checks have short timeouts of their own.
            await self._call("ping", self._redis.ping, bound_seconds=self._timeout, quiet=not self._reachable)
        except DownloadStoreUnavailable:
            self._reachable = False
            return False
        if not self._reachable:
            logger.warning("download store: Redis answers again")
            self._reachable = True
        return True

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _call(
        self, what: str, command: Callable[[], Awaitable[T]], *, bound_seconds: float | None = None, quiet: bool = False
    ) -> T:
        # The socket timeouts bound each attempt; this bounds the whole command, retry included. A builtin
        # TimeoutError must not escape either: report.py reads that as its own tool deadline.
        try:
            with anyio.fail_after(bound_seconds or self._timeout * 3):
                return await command()
        except (RedisError, OSError, TimeoutError) as exc:
            # redis-py's messages name host and port, never the password from the URL. A health check that fails
            # again during a known outage stays quiet: load balancers poll every few seconds.
            if not quiet:
                logger.warning("download store: Redis %s failed (%s: %s)", what, type(exc).__name__, exc)
            raise DownloadStoreUnavailable() from None
