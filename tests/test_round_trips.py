"""scripts/round_trips.py runs, and counts what the cache saves: OpenMeter requests per call, cold and warm (counts,
never times: the figures the script prints are for docs/openmeter.md, not for assertions)."""

from __future__ import annotations

import argparse
import statistics

import pytest

from scripts.round_trips import measure, report

pytestmark = pytest.mark.anyio


async def test_a_warm_call_makes_only_its_own_requests(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(api="v1", latency=0.005, calls=1)
    results = await measure(args)
    requests = {
        label: {phase: statistics.median(f.requests) for phase, f in phases.items()}
        for label, phases in results.items()
    }
    assert requests == {
        "tenant total": {"cold": 3, "warm": 2},  # (meter) + the window + the preceding window
        "summary": {"cold": 3, "warm": 2},
        "trend": {"cold": 4, "warm": 3},  # + the per-combination query for the Summary sheet's top 5s
        "trend by user": {"cold": 4, "warm": 3},
        "events, one day": {"cold": 4, "warm": 3},  # (meter) + subjects + one page + the preceding window
        # Filtered calls ask exactly what unfiltered ones ask (the filter rides in the same requests).
        "total of one user": {"cold": 3, "warm": 2},
        "summary by module": {"cold": 3, "warm": 2},
        "trend of one user": {"cold": 4, "warm": 3},
        "events of one user": {"cold": 4, "warm": 3},
        "forecast of one user": {"cold": 2, "warm": 1},  # (meter) + the daily history
        "total, no such user": {"cold": 4, "warm": 3},  # + the closest values, only when nothing matched
    }
    report(args, results)
    assert "events, one day" in capsys.readouterr().out
