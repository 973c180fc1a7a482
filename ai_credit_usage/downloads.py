"""Short-lived download links: an in-memory store of finished workbooks behind unguessable tokens.

An entry lives `ttl` seconds by the injected clock. Expired entries are deleted (their bytes freed) whenever the
store is touched and by `purge_expired()`, which the server also runs periodically, so memory does not wait for
the next request.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from ai_credit_usage.window import Clock


@dataclass(frozen=True)
class Download:
    content: bytes
    filename: str
    media_type: str
    expires_at: datetime


class DownloadStore:
    def __init__(self, ttl_seconds: int, clock: Clock) -> None:
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._entries: dict[str, Download] = {}
        self._lock = threading.Lock()

    def put(self, content: bytes, *, filename: str, media_type: str) -> tuple[str, Download]:
        token = secrets.token_urlsafe(32)  # 256 random bits
        download = Download(content, filename, media_type, self._clock() + self._ttl)
        with self._lock:
            self._purge_locked()
            self._entries[token] = download
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
            del self._entries[token]
        return len(expired)
