"""Short-lived download links: an in-memory store of finished workbooks behind unguessable tokens.

An entry lives `ttl` seconds by the injected clock. Expired entries are deleted (their bytes freed) whenever the
store is touched and by `purge_expired()`, which the server also runs periodically, so memory does not wait for
the next request. The store never holds more than `max_bytes`: the oldest links give way to the newest.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from ai_credit_usage.errors import UserFacingError
from ai_credit_usage.window import Clock

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Download:
    content: bytes
    filename: str
    media_type: str
    expires_at: datetime


class DownloadTooLarge(UserFacingError):
    """A single workbook larger than the whole store's budget."""


class DownloadStore:
    def __init__(self, ttl_seconds: int, clock: Clock, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._max_bytes = max_bytes
        self._entries: dict[str, Download] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def put(self, content: bytes, *, filename: str, media_type: str) -> tuple[str, Download]:
        if len(content) > self._max_bytes:
            raise DownloadTooLarge(
                f"The Excel file for this window would be {len(content) / 1e6:,.0f} MB, more than this server can "
                "hold; ask for a shorter window."
            )
        token = secrets.token_urlsafe(32)  # 256 random bits
        download = Download(content, filename, media_type, self._clock() + self._ttl)
        with self._lock:
            self._purge_locked()
            while self._entries and self._bytes + len(content) > self._max_bytes:
                self._remove_locked(next(iter(self._entries)))  # the oldest link expires soonest anyway
                logger.warning("download store at its %d-byte budget: dropped the oldest live link", self._max_bytes)
            self._entries[token] = download
            self._bytes += len(content)
        return token, download

    def get(self, token: str) -> Download | None:
        with self._lock:
            self._purge_locked()
            return self._entries.get(token)

    def purge_expired(self) -> int:
        with self._lock:
            return self._purge_locked()

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
        return len(expired)

    def _remove_locked(self, token: str) -> None:
        self._bytes -= len(self._entries.pop(token).content)
