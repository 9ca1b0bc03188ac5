"""The order in which a core's instructions are built into LLVM IR (``gradcomp.ir``).

A program of ``LONG_PROGRAM`` instructions or more is built store by store (each
store's value computed just before the store, depth first, so values live
briefly), with an empty ``asm sideeffect`` every ``BARRIER_EVERY`` instructions
to bound the regions LLVM's schedulers compare memory operations in.  Neither
changes an operation, so results stay the same bit for bit.  Shorter programs
keep derive's order.
"""

from __future__ import annotations

import numpy as np

import gradcomp as gc
from gradcomp import ir

TWO_TERMS = ["a load 0 0", "b load 0 1", "aa mul 0 0", "bb mul 1 1", "- store 0 0 2",
             "- store 0 1 3"]


def test_each_store_follows_the_instructions_it_needs():
    assert ir._schedule(TWO_TERMS) == ["b load 0 1", "bb mul 0 0", "- store 0 1 1",
                                       "a load 0 0", "aa mul 3 3", "- store 0 0 4"]


def test_scheduling_keeps_every_instruction_once_after_its_operands():
    import sympy as sp
    x = sp.symbols("x0:9")
    kernel = gc.compile(sum(1 / ((x[i] - x[j]) ** 2 + 1) for i in range(9) for j in range(i + 1, 9)), [x],
                        cache=False)
    code = kernel._import().vjp_CODE
    original = [line for line in code.split("\n")[2:] if line]
    scheduled = ir._schedule(original)
    assert sorted(line.split(" ")[1] for line in scheduled) == sorted(line.split(" ")[1] for line in original)
    for index, line in enumerate(scheduled):
        _, op, *args = line.split(" ")
        assert all(int(t) < index for t in args[ir._LITERAL_ARGS.get(op, 0):])


def test_a_long_core_is_built_store_by_store_with_a_memory_barrier_every_barrier_every_instructions():
    import sympy as sp
    x = sp.symbols("x0:700")
    kernel = gc.compile([x[i] * x[i + 1] for i in range(699)], [x], cache=False)
    points = np.random.default_rng(0).standard_normal((5, 700))
    np.testing.assert_array_equal(kernel(points), points[:, :-1] * points[:, 1:])
    code = kernel._import().forward_CODE
    lines = [line for line in code.split("\n")[2:] if line]
    assert len(lines) >= ir.LONG_PROGRAM
    assert ir._parse(code).lines == ir._schedule(lines)
    barriers = kernel.ir("forward").count('call void asm sideeffect ""')
    assert barriers == 1 + len(lines) // ir.BARRIER_EVERY  # the one at the start, then one every BARRIER_EVERY


def test_a_short_core_keeps_derives_order_and_no_barrier():
    import sympy as sp
    x = sp.symbols("x0:40")
    kernel = gc.compile([x[i] * x[i + 1] for i in range(39)], [x], cache=False)
    code = kernel._import().forward_CODE
    assert ir._parse(code).lines == [line for line in code.split("\n")[2:] if line]
    assert kernel.ir("forward").count('call void asm sideeffect ""') == 1
