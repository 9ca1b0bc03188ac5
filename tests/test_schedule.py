"""The order in which a core's instructions are built into LLVM IR (``gradcomp.ir``).

A program of ``LONG_PROGRAM`` instructions or more is built for LLVM's sake: its
sums of ``ACCUMULATE_MIN`` terms or more accumulate in memory term by term, each
term computed just before it is added, the other stores come last, each after
what it needs, its inputs are read again between barriers, and an empty ``asm
sideeffect`` every ``BARRIER_EVERY`` instructions bounds the regions LLVM's
schedulers compare memory operations in, each region a basic block.  Few values then live at once.  Only
the order of a long sum's additions changes, so results differ in rounding only.
Shorter programs keep derive's order.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradcomp as gc
from gradcomp import ir

TWO_TERMS = ["a load 0 0", "b load 0 1", "aa mul 0 0", "bb mul 1 1", "- store 0 0 2",
             "- store 0 1 3"]

NINE_TERMS = [f"x{k} load 0 {k}" for k in range(9)] + [
    "- add 0 1", "- sub 9 2", "- add 3 4", "- add 10 11", "- add 5 6", "- sub 7 8", "- add 13 14",
    "s add 12 15", "- store 0 0 16"]
"""x0 + x1 - x2 + (x3 + x4) + (x5 + x6 + (x7 - x8)): one sum of nine terms, two subtracted."""


def _pair_energy(n):
    import sympy as sp
    x = sp.symbols(f"x0:{n}")
    return sum(1 / ((x[i] - x[j]) ** 2 + 1) for i in range(n) for j in range(i + 1, n)), x


def _most_live(lines):
    """The most values an instruction list keeps live at once."""
    last_use = {}
    for index, line in enumerate(lines):
        _, op, *args = line.split(" ")
        for token in args[ir._LITERAL_ARGS.get(op, 0):]:
            last_use[int(token)] = index
    ends = [0] * (len(lines) + 1)
    live = most = 0
    for index in range(len(lines)):
        live -= ends[index]
        if index in last_use:
            live += 1
            ends[last_use[index] + 1] += 1
        most = max(most, live)
    return most


def test_each_store_follows_the_instructions_it_needs():
    assert ir._schedule(TWO_TERMS) == ["b load 0 1", "bb mul 0 0", "- store 0 1 1",
                                       "a load 0 0", "aa mul 3 3", "- store 0 0 4"]


def test_a_long_sum_adds_its_terms_from_the_last_computed_with_their_signs_then_is_read_once():
    assert ir._schedule(NINE_TERMS) == [
        "x8 load 0 8", "- acc 0 neg 0", "x7 load 0 7", "- acc 0 add 2", "x6 load 0 6", "- acc 0 add 4",
        "x5 load 0 5", "- acc 0 add 6", "x4 load 0 4", "- acc 0 add 8", "x3 load 0 3", "- acc 0 add 10",
        "x2 load 0 2", "- acc 0 sub 12", "x1 load 0 1", "- acc 0 add 14", "x0 load 0 0", "- acc 0 add 16",
        "s accget 0", "- store 0 0 18"]


def test_a_sum_of_fewer_terms_than_accumulate_min_keeps_its_additions():
    program = [f"x{k} load 0 {k}" for k in range(3)] + ["- add 0 1", "s add 3 2", "- store 0 0 4"]
    assert ir._schedule(program) == ["x0 load 0 0", "x1 load 0 1", "- add 0 1", "x2 load 0 2", "s add 2 3",
                                     "- store 0 0 4"]


def test_scheduling_computes_every_value_after_its_operands_and_the_same_operations_but_sums():
    kernel = gc.compile(_pair_energy(12)[0], [_pair_energy(12)[1]], cache=False)
    original = [line for line in kernel._import().vjp_CODE.split("\n")[2:] if line]
    scheduled = ir._schedule(original)
    for index, line in enumerate(scheduled):
        _, op, *args = line.split(" ")
        assert all(int(t) < index for t in args[ir._LITERAL_ARGS.get(op, 0):])

    def others(lines):
        return sorted(op for op in (line.split(" ")[1] for line in lines) if op not in ("add", "sub", "neg",
                                                                                        "acc", "accget"))
    assert others(scheduled) == others(original)


def test_a_sum_of_all_pairs_is_computed_pair_by_pair_so_few_values_live_at_once():
    kernel = gc.compile(_pair_energy(24)[0], [_pair_energy(24)[1]], cache=False)
    original = [line for line in kernel._import().value_and_vjp_CODE.split("\n")[2:] if line]
    pairs = 24 * 23 // 2
    assert _most_live(original) > 2 * pairs  # derive's order: each pair's forward values wait for the reverse
    assert _most_live(ir._schedule(original)) < 24 + 16  # the inputs and one pair's values


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_long_program_gives_a_short_ones_results_up_to_rounding(monkeypatch, dtype):
    energy, x = _pair_energy(10)
    points = np.random.default_rng(0).standard_normal((37, 10)).astype(dtype)
    upstream = np.random.default_rng(1).standard_normal(37).astype(dtype)
    short = gc.compile(energy, [x], dtype=dtype, cache=False).value_and_vjp(points, upstream)
    monkeypatch.setattr(ir, "LONG_PROGRAM", 1)
    # a name of its own: the same source would share the short kernel's module, compiled drivers and all
    long = gc.compile(energy, [x], dtype=dtype, cache=False, name=f"long_sums_{dtype}")
    assert ir._parse(long._import().value_and_vjp_CODE).long
    tolerance = 1e-13 if dtype == "float64" else 2e-6
    for batch, point in zip(long.value_and_vjp(points, upstream), short):
        np.testing.assert_allclose(batch, point, rtol=tolerance, atol=tolerance)
    for row in (0, 36):
        for single, point in zip(long.value_and_vjp(points[row], upstream[row]), short):
            np.testing.assert_allclose(single, point[row], rtol=tolerance, atol=tolerance)


def test_a_long_core_has_a_memory_barrier_and_a_new_block_every_barrier_every_instructions():
    import sympy as sp
    x = sp.symbols("x0:700")
    kernel = gc.compile([x[i] * x[i + 1] for i in range(699)], [x], cache=False)
    points = np.random.default_rng(0).standard_normal((5, 700))
    np.testing.assert_array_equal(kernel(points), points[:, :-1] * points[:, 1:])
    code = kernel._import().forward_CODE
    lines = [line for line in code.split("\n")[2:] if line]
    assert len(lines) >= ir.LONG_PROGRAM
    assert ir._parse(code).lines == ir._schedule(lines)
    barriers = len(lines) // ir.BARRIER_EVERY
    assert kernel.ir("forward").count('asm sideeffect "", "~{memory}"') == barriers
    assert kernel.ir("forward").count("br i1") == barriers  # each region a basic block of its own


def test_a_short_core_keeps_derives_order_and_no_barrier():
    import sympy as sp
    x = sp.symbols("x0:40")
    kernel = gc.compile([x[i] * x[i + 1] for i in range(39)], [x], cache=False)
    code = kernel._import().forward_CODE
    assert ir._parse(code).lines == [line for line in code.split("\n")[2:] if line]
    assert kernel.ir("forward").count("asm sideeffect") == 1


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_long_cores_batch_gives_each_point_its_single_point_result_bit_for_bit(monkeypatch, dtype):
    monkeypatch.setattr(ir, "LONG_PROGRAM", 1)
    energy, x = _pair_energy(10)
    kernel = gc.compile(energy, [x], dtype=dtype, cache=False, name=f"long_batch_{dtype}")  # a module of its own
    points = np.random.default_rng(2).standard_normal((21, 10)).astype(dtype)
    upstream = np.random.default_rng(3).standard_normal(21).astype(dtype)
    value, gradient = kernel.value_and_vjp(points, upstream)
    for row in range(21):
        single_value, single_gradient = kernel.value_and_vjp(points[row], upstream[row])
        assert single_value == value[row]
        np.testing.assert_array_equal(single_gradient, gradient[row])
