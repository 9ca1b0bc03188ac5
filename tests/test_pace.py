"""Large batches run on all cores unless the parallel driver measures slower than the serial one.

When other processes hold the cores, OpenMP's threads wait for a scheduler slice at the end of every
parallel batch; ``Pace`` then sends large batches to the serial driver, and tries the parallel one
again every ``RETRY``-th batch.
"""

from gradcomp.pace import Pace

POINTS = 1000


def choices(pace, count):
    return [pace.parallel_wanted() for _ in range(count)]


def warmed(parallel_seconds, serial_seconds):
    """A pace after the parallel driver's first (untimed) and second run, and one serial run."""
    pace = Pace()
    assert pace.parallel_wanted()
    pace.record(True, POINTS, 1.0)  # starting the threads: not counted
    assert pace.parallel_wanted()
    pace.record(True, POINTS, parallel_seconds)
    pace.record(True, POINTS, parallel_seconds)
    pace.record(False, POINTS, serial_seconds)
    return pace


def test_a_parallel_driver_faster_than_the_serial_one_runs_every_large_batch():
    assert choices(warmed(parallel_seconds=0.5e-3, serial_seconds=1e-3), 20) == [True] * 20


def test_a_parallel_driver_slower_twice_in_a_row_gives_way_and_is_retried_every_RETRY_th_batch():
    pace = warmed(parallel_seconds=30e-3, serial_seconds=1e-3)
    assert choices(pace, 2 * Pace.RETRY) == ([False] * (Pace.RETRY - 1) + [True]) * 2


def test_one_slow_parallel_run_does_not_switch_to_the_serial_driver():
    pace = warmed(parallel_seconds=0.5e-3, serial_seconds=1e-3)
    pace.record(True, POINTS, 30e-3)  # e.g. the first touch of a new output's pages
    assert pace.parallel_wanted()


def test_the_parallel_driver_comes_back_once_it_is_faster_again():
    pace = warmed(parallel_seconds=30e-3, serial_seconds=1e-3)
    pace.record(True, POINTS, 0.5e-3)
    assert pace.parallel_wanted()


def test_the_serial_driver_is_timed_once_when_only_the_parallel_one_has_run():
    pace = Pace()
    pace.record(True, POINTS, 1.0)
    pace.record(True, POINTS, 0.5e-3)
    assert pace.parallel_wanted() is False  # a serial run measures what the parallel one is compared with
