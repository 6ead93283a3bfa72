"""Summaries shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def summary(samples_s: list[float]) -> dict[str, float]:
    """Median and p95 of samples given in seconds, in milliseconds."""
    ordered = sorted(samples_s)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "runs": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(p95 * 1000, 3),
    }


def timed(action: Callable[[], object]) -> float:
    """Seconds one call of `action` takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started
