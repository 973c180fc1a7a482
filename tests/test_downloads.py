"""`/download/<token>` and `/health`, with expiry driven by the injected clock."""

from __future__ import annotations

import io
import random
import re
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from openpyxl import load_workbook

from ai_credit_usage.answers.downloads import DownloadTooLarge, MemoryDownloadStore
from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from tests.conftest import NOW, FakeClock, call_tool, text_of

pytestmark = pytest.mark.anyio
LETTERS = string.ascii_letters
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def download_path(text: str) -> str:
    match = re.search(r"\]\(http://localhost:8765(/download/([\w-]+))\)", text)
    assert match, text
    assert len(match.group(2)) >= 43  # 32 random bytes, base64url: 256 bits
    return match.group(1)


async def test_health_answers_without_openmeter(server_url: str, openmeter: OpenMeterStandIn) -> None:
    response = httpx2.get(f"{server_url}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert not openmeter.requests


async def test_download_serves_every_row_as_an_attachment(server_url: str, openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(
        *[
            make_event(tenant="acme", credits=0.001 * i, time=datetime(2026, 1, 15, 0, i, tzinfo=UTC), user=f"u{i}")
            for i in range(55)
        ],
        make_event(tenant="acme", credits=1, time=datetime(2026, 1, 15, 2, tzinfo=UTC), user="=cmd|' /C calc'!A0"),
        make_event(tenant="acme", credits=1, time=datetime(2026, 1, 15, 3, tzinfo=UTC), user="@SUM(1+1)"),
        make_event(tenant="acme", credits=1, time=datetime(2026, 1, 15, 4, tzinfo=UTC), user="+1+1", module="-2+3"),
    )
    result = await call_tool(server_url, "get_credit_events", {"from_date": "2026-01-15", "to_date": "2026-01-15"})
    text = text_of(result)
    assert "Showing 50 of 58 rows" in text
    response = httpx2.get(server_url + download_path(text))
    assert response.status_code == 200
    assert response.headers["content-type"] == XLSX
    assert response.headers["content-disposition"] == (
        'attachment; filename="ai-credits_events_acme_2026-01-15_to_2026-01-16.xlsx"'
    )
    workbook = load_workbook(io.BytesIO(response.content))
    data = workbook["Data"]
    rows = list(data.iter_rows(values_only=True))
    assert len(rows) == 59
    assert rows[1][1:3] == ("+1+1", "-2+3")
    assert rows[2][1] == "@SUM(1+1)" and rows[3][1] == "=cmd|' /C calc'!A0"
    assert all(data[cell].data_type == "s" for cell in ("B2", "C2", "B3", "B4"))  # text, never a formula
    assert rows[-1] == (datetime(2026, 1, 15, 0, 0), "u0", "chat", "p1", "acme", 0)
    assert rows[4][5] == pytest.approx(0.054)  # exact in the workbook, "0.05" in the text
    about = dict(workbook["About"].iter_rows(values_only=True))
    assert about["tenant"] == "acme" and about["from (UTC)"] == "2026-01-15T00:00:00Z"


async def test_link_expires_after_the_ttl(server_url: str, clock: FakeClock) -> None:
    text = text_of(await call_tool(server_url, "get_credit_usage_by_tenant"))
    assert "(link expires at 2026-01-20T12:10:00Z, in 10 minutes)" in text
    path = download_path(text)
    clock.advance(seconds=599)
    assert httpx2.get(server_url + path).status_code == 200
    clock.advance(seconds=1)
    expired = httpx2.get(server_url + path)
    assert expired.status_code == 404
    assert expired.text == "Not Found"


async def test_unknown_token_is_404_and_reveals_nothing(server_url: str) -> None:
    for token in ("nope", "A" * 43, "..%2F..%2Fetc%2Fpasswd"):
        response = httpx2.get(f"{server_url}/download/{token}")
        assert response.status_code == 404
        assert response.text == "Not Found"


async def test_custom_ttl(start_server, clock: FakeClock) -> None:
    url = start_server(download_ttl_seconds=60)
    text = text_of(await call_tool(url, "get_credit_usage_by_tenant"))
    assert "in 1 minute)" in text
    clock.advance(seconds=60)
    assert httpx2.get(url + download_path(text)).status_code == 404


async def test_expired_entries_are_freed_not_hidden() -> None:
    clock = FakeClock(NOW)
    store = MemoryDownloadStore(600, clock)
    tokens = {(await store.put(b"x" * 1000, filename=f"{i}.xlsx", media_type=XLSX, tenant="acme"))[0] for i in range(5)}
    assert len(tokens) == 5 and len(store) == 5
    clock.advance(seconds=300)
    await store.put(b"y", filename="late.xlsx", media_type=XLSX, tenant="acme")
    clock.advance(seconds=300)
    assert await store.purge_expired() == 5
    assert len(store) == 1
    clock.advance(seconds=timedelta(minutes=10).total_seconds())
    assert await store.get("anything") is None
    assert len(store) == 0


async def test_the_store_never_grows_past_its_byte_budget() -> None:
    store = MemoryDownloadStore(600, FakeClock(NOW), max_bytes=2_500_000)
    tokens = [
        (await store.put(b"x" * 1_000_000, filename=f"{i}.xlsx", media_type=XLSX, tenant="acme"))[0] for i in range(4)
    ]
    assert store.bytes_held == 2_000_000
    assert [(await store.get(token)) is not None for token in tokens] == [False, False, True, True]  # oldest gave way
    with pytest.raises(DownloadTooLarge, match="shorter window"):
        await store.put(b"x" * 3_000_000, filename="huge.xlsx", media_type=XLSX, tenant="acme")
    assert store.bytes_held == 2_000_000


async def test_expiry_releases_the_bytes() -> None:
    clock = FakeClock(NOW)
    store = MemoryDownloadStore(600, clock, max_bytes=10_000_000)
    await store.put(b"x" * 5000, filename="a.xlsx", media_type=XLSX, tenant="acme")
    clock.advance(seconds=600)
    assert await store.purge_expired() == 1
    assert store.bytes_held == 0


# Issue 16 F4: under pressure a link gives way only if its tenant holds more than its share of the budget (the budget
# split evenly among the tenants holding links, the tenant storing now included).
MB = 1_000_000


async def put(store: MemoryDownloadStore, tenant: str, size: int) -> str:
    return (await store.put(b"x" * size, filename=f"{tenant}.xlsx", media_type=XLSX, tenant=tenant))[0]


async def live(store: MemoryDownloadStore, tokens: list[str]) -> list[bool]:
    return [(await store.get(token)) is not None for token in tokens]


async def test_one_tenant_cannot_evict_another_tenants_link_within_its_share() -> None:
    store = MemoryDownloadStore(600, FakeClock(NOW), max_bytes=4 * MB)
    acme = await put(store, "acme", 1 * MB)
    globex = [await put(store, "globex", 1 * MB) for _ in range(10)]
    assert await store.get(acme) is not None  # acme holds 1 MB, under its half of 4 MB
    assert await live(store, globex) == [False] * 7 + [True] * 3  # globex's own oldest gave way
    assert store.bytes_held == 4 * MB


async def test_a_tenant_over_its_share_gives_way_to_a_newcomer() -> None:
    store = MemoryDownloadStore(600, FakeClock(NOW), max_bytes=4 * MB)
    globex = [await put(store, "globex", 1 * MB) for _ in range(4)]
    acme = await put(store, "acme", 1 * MB)  # shares are now 2 MB each; globex holds 4 MB
    initech = await put(store, "initech", 1 * MB)  # shares 4/3 MB: globex (3 MB) is still over, acme is not
    assert await live(store, globex) == [False, False, True, True]
    assert await live(store, [acme, initech]) == [True, True]


async def test_when_every_other_tenant_is_within_its_share_the_newcomer_is_refused() -> None:
    store = MemoryDownloadStore(600, FakeClock(NOW), max_bytes=4 * MB)
    kept = [await put(store, tenant, 1 * MB + 300_000) for tenant in ("acme", "globex")]  # 2.6 MB held
    with pytest.raises(DownloadTooLarge, match="try again in a few minutes"):
        await put(store, "initech", 1_500_000)  # over its 4/3 MB share, and nobody else is over theirs
    assert await live(store, kept) == [True, True]
    initech = await put(store, "initech", 1 * MB)  # within its share, and it fits
    assert await live(store, [*kept, initech]) == [True, True, True]


async def test_expired_links_are_freed_before_anyone_gives_way() -> None:
    clock = FakeClock(NOW)
    store = MemoryDownloadStore(600, clock, max_bytes=2 * MB)
    await put(store, "acme", 1 * MB)
    clock.advance(seconds=300)
    acme = await put(store, "acme", 1 * MB)
    clock.advance(seconds=301)  # the first has expired
    globex = await put(store, "globex", 1 * MB)
    assert await live(store, [acme, globex]) == [True, True]


async def test_another_tenants_big_answers_do_not_evict_my_link(
    start_server: Callable[..., str], openmeter: OpenMeterStandIn
) -> None:
    """End to end: globex's workbooks (about 400 KB each, random text does not compress) fill a 1 MiB store."""
    rnd = random.Random(16)
    openmeter.ingest(
        make_event(tenant="acme", credits=5, time=NOW - timedelta(hours=1), user="acme-user"),
        *[
            make_event(
                tenant="globex",
                credits=1,
                time=NOW - timedelta(minutes=i + 1),
                user="".join(rnd.choices(LETTERS, k=400)),
            )
            for i in range(1200)
        ],
    )
    url = start_server(download_store_max_bytes=1024 * 1024)
    acme = download_path(text_of(await call_tool(url, "get_credit_usage_by_tenant")))
    globex_headers = {"X-Tenant-Name": "globex", "X-User-UserRole": "admin"}
    globex = [
        download_path(text_of(await call_tool(url, "get_credit_usage_summary", headers=globex_headers)))
        for _ in range(3)
    ]
    assert httpx2.get(url + acme).status_code == 200  # acme holds far less than its half of the store
    assert [httpx2.get(url + path).status_code for path in globex] == [404, 200, 200]  # globex's own oldest gave way
