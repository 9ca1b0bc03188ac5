"""Timing: back-to-back samples, interleaved round-robin across systems, medians.

Interleaving spreads the machine's noise (2 shared cores) over every system
alike instead of letting one system's samples land in a quiet or busy spell.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Plan:
    """How long to sample: samples per system, seconds per sample, the slow-system budget."""

    samples: int
    min_sample_s: float
    slow_budget_s: float
    """A system slower than this per call gets fewer samples: max(2, budget / seconds per call)."""


def seconds_per_call(call: Callable[[], object], min_seconds: float) -> float:
    """One sample: loop the call until min_seconds have passed; mean seconds per call."""
    calls = 0
    start = time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def sample_count(first_call_s: float, plan: Plan) -> int:
    """Full samples for fast systems; slow ones get what fits their budget (at least 2)."""
    if first_call_s * plan.samples <= plan.slow_budget_s:
        return plan.samples
    return max(2, min(plan.samples, int(plan.slow_budget_s / max(first_call_s, 1e-9))))


def round_robin(calls: dict[str, Callable[[], object]], plan: Plan) -> dict[str, list[float]]:
    """Seconds-per-call samples of every system, one sample each per round after one warm-up call."""
    wanted = {}
    for label, call in calls.items():
        start = time.perf_counter()
        call()  # warm-up: compile, caches, allocator
        wanted[label] = sample_count(time.perf_counter() - start, plan)
    samples: dict[str, list[float]] = {label: [] for label in calls}
    for round_ in range(max(wanted.values(), default=0)):
        for label, call in calls.items():
            if round_ < wanted[label]:
                samples[label].append(seconds_per_call(call, plan.min_sample_s))
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
