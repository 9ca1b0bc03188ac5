"""Which driver runs a large batch: the parallel/serial policy, measured call by call."""

from __future__ import annotations

import math


class Pace:
    """The parallel driver, unless its last two runs were both slower per point than the serial one, as
    when other processes hold the cores.  Measured on 2 cores with one busy process beside: mlp8x16x4's
    VJP ran 0.3 Mpts/s on two threads at N = 2000 (each call waited a scheduler slice for the second
    thread) and 18 Mpts/s on one.  Two runs, because one may be slow for other reasons (the first touch
    of a new output's pages); a slow parallel driver is tried again every ``RETRY``-th batch, and the
    serial one is timed once if it never ran a large batch."""

    RETRY = 8
    __slots__ = ("serial", "parallel", "skipped", "parallel_runs")

    def __init__(self):
        self.serial = None  # seconds per point of the last large batch on the serial driver
        self.parallel = (math.inf, math.inf)  # ... of the last two on the parallel driver
        self.skipped = 0
        self.parallel_runs = 0

    def parallel_wanted(self) -> bool:
        fastest = min(self.parallel)
        if fastest == math.inf or (self.serial is not None and fastest <= self.serial):
            return self.serial is not None or self.parallel_runs < 3  # after a few runs: time the serial once
        self.skipped += 1
        if self.skipped >= self.RETRY:
            self.skipped = 0
            return True
        return False

    def record(self, parallel: bool, points: int, seconds: float) -> None:
        if parallel:
            self.parallel_runs += 1
            if self.parallel_runs > 1:  # the first run starts the threads
                self.parallel = (self.parallel[1], seconds / points)
        else:
            self.serial = seconds / points
