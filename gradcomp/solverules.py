"""Lowering and differentiating ``gc.solve`` nodes on derive's graph.

A solve lowers once into straight-line code: LU with partial pivoting (row
swaps as selects, so every SIMD lane pivots on its own) or Cholesky, then the
substitutions.  Its derivatives never go back through that elimination: the
sweeps treat the solution's components as one group and apply the adjoint
rule with the same factors, O(n²) per sweep instead of O(n³):

    reverse  ȳ = A⁻ᵀ x̄,  b̄ += ȳ,  Ā -= ȳ xᵀ
    forward  ẋ = A⁻¹ (ḃ − Ȧ x)
"""

from __future__ import annotations

from typing import NamedTuple

import sympy as sp
from sympy.logic.boolalg import BooleanAtom

from .errors import CompileError


class SolveGroup(NamedTuple):
    """One lowered solve: the operands it read, its factors, and its solution's components (the members)."""

    kind: str  # "lu" or "cholesky"
    a: list  # n x n operands (or numbers) of A
    b: list  # n x m operands of b
    factors: list  # lu: L below the diagonal (unit), U on and above; cholesky: L (lower)
    inverse_pivots: list  # 1 / U[k][k] (lu) or 1 / L[k][k] (cholesky)
    swaps: list  # lu: (k, i, condition) row swaps in the order applied
    x: list  # n x m members
    earliest: object  # the member computed first: where the sweeps apply the rule


def _is_number(value) -> bool:
    return isinstance(value, BooleanAtom) or value.is_Number


def lower_solve(graph, node) -> SolveGroup:
    """Lower ``node`` (a LinearSolve whose entries are lowered already) into nodes of ``graph``."""
    def operand(entry):
        return entry if _is_number(entry) else graph.lowered[entry]

    a = [[operand(e) for e in row] for row in node.matrix]
    b = [[operand(e) for e in row] for row in node.rhs]
    if node.kind == "cholesky":
        factors, inverse_pivots, swaps, x = _cholesky(graph, a, b)
    else:
        factors, inverse_pivots, swaps, x = _lu(graph, a, b)
    members = [v for row in x for v in row]
    earliest = min(members, key=lambda v: graph.position.get(v, -1)) if members else None
    return SolveGroup(node.kind, a, b, factors, inverse_pivots, swaps, x, earliest)


def _select(graph, condition, if_true, if_false):
    """One select node of two operands (SymPy's Piecewise evaluation, 0.25 ms a node, is skipped)."""
    if if_true == if_false:
        return if_true
    return graph.intern(sp.Piecewise((if_true, condition), (if_false, sp.true), evaluate=False))


def _inverse(graph, pivot, k: int):
    if _is_number(pivot) and pivot == 0:
        raise CompileError(f"A is singular: after elimination its pivot {k} is the constant 0 at every point.")
    return graph.lower(sp.S.One / pivot)


def _lu(graph, a, b):
    """P A = L U by rows, L's multipliers stored below the diagonal (swapped with their rows, as LAPACK does).
    Partial pivoting by a conditional swap of rows k and i whenever |a_ik| beats the current |a_kk|: after
    the column's scan row k holds its largest entry, in every lane independently."""
    n = len(a)
    a = [row[:] for row in a]
    b = [row[:] for row in b]
    swaps, inverse_pivots = [], []
    for k in range(n):
        for i in range(k + 1, n):
            if _is_number(a[i][k]) and a[i][k] == 0:
                continue
            condition = graph.lower(sp.Abs(a[i][k]) > sp.Abs(a[k][k]))
            if condition == sp.false:
                continue
            swaps.append((k, i, condition))
            for rows in (a, b):
                upper, lower = rows[k], rows[i]
                if condition == sp.true:
                    rows[k], rows[i] = lower, upper
                    continue
                rows[k] = [_select(graph, condition, y, z) for z, y in zip(upper, lower)]
                rows[i] = [_select(graph, condition, z, y) for z, y in zip(upper, lower)]
        inverse = _inverse(graph, a[k][k], k)
        inverse_pivots.append(inverse)
        for i in range(k + 1, n):
            if _is_number(a[i][k]) and a[i][k] == 0:
                continue
            multiplier = graph.lower(a[i][k] * inverse)
            a[i][k] = multiplier
            for rows, start in ((a, k + 1), (b, 0)):
                for j in range(start, len(rows[i])):
                    if not (_is_number(rows[k][j]) and rows[k][j] == 0):
                        rows[i][j] = graph.lower(rows[i][j] - multiplier * rows[k][j])
    x = _back(graph, b, lambda i, q: a[i][q], inverse_pivots)
    return a, inverse_pivots, swaps, x


def _cholesky(graph, a, b):
    """A = L Lᵀ from A's lower triangle; a matrix that is not positive definite gives NaN (sqrt < 0)."""
    n = len(a)
    factor = [[sp.S.Zero] * n for _ in range(n)]
    inverse_pivots = []
    for k in range(n):
        diagonal = graph.lower(sp.sqrt(a[k][k] - sp.Add(*(factor[k][q] ** 2 for q in range(k)))))
        factor[k][k] = diagonal
        inverse = _inverse(graph, diagonal, k)
        inverse_pivots.append(inverse)
        for i in range(k + 1, n):
            dot = sp.Add(*(factor[i][q] * factor[k][q] for q in range(k)))
            factor[i][k] = graph.lower((a[i][k] - dot) * inverse)
    y = _forward(graph, b, lambda i, q: factor[i][q], inverse_pivots)
    x = _back(graph, y, lambda i, q: factor[q][i], inverse_pivots)
    return factor, inverse_pivots, [], x


def _forward(graph, rhs, entry, inverse_pivots=None):
    """Forward substitution with the lower-triangular matrix ``entry(i, q)`` (unit diagonal without pivots)."""
    n = len(rhs)
    out = [[None] * len(rhs[0]) for _ in range(n)]
    for i in range(n):
        for j in range(len(rhs[0])):
            value = rhs[i][j] - sp.Add(*(entry(i, q) * out[q][j] for q in range(i)))
            out[i][j] = graph.lower(value if inverse_pivots is None else value * inverse_pivots[i])
    return out


def _back(graph, rhs, entry, inverse_pivots=None):
    """Back substitution with the upper-triangular matrix ``entry(i, q)`` (q > i), dividing by its pivots
    (given as their inverses), or with a unit diagonal when ``inverse_pivots`` is None."""
    n = len(rhs)
    out = [[None] * len(rhs[0]) for _ in range(n)]
    for i in reversed(range(n)):
        for j in range(len(rhs[0])):
            value = rhs[i][j] - sp.Add(*(entry(i, q) * out[q][j] for q in range(i + 1, n)))
            out[i][j] = graph.lower(value if inverse_pivots is None else value * inverse_pivots[i])
    return out


def _solve_transposed(graph, group, rhs):
    """A⁻ᵀ rhs with the group's factors."""
    n = len(rhs)
    factors, inverse_pivots = group.factors, group.inverse_pivots
    if group.kind == "cholesky":  # A = L Lᵀ is symmetric: A⁻ᵀ = A⁻¹
        y = _forward(graph, rhs, lambda i, q: factors[i][q], inverse_pivots)
        return _back(graph, y, lambda i, q: factors[q][i], inverse_pivots)
    # Aᵀ = Uᵀ Lᵀ P: solve Uᵀ z = rhs, Lᵀ w = z, then undo the swaps in reverse order
    z = _forward(graph, rhs, lambda i, q: factors[q][i], inverse_pivots)
    w = _back(graph, z, lambda i, q: factors[q][i])
    for k, i, condition in reversed(group.swaps):
        w = _swap(graph, w, k, i, condition)
    return w[:n]


def _solve_direct(graph, group, rhs):
    """A⁻¹ rhs with the group's factors."""
    factors, inverse_pivots = group.factors, group.inverse_pivots
    if group.kind == "cholesky":
        y = _forward(graph, rhs, lambda i, q: factors[i][q], inverse_pivots)
        return _back(graph, y, lambda i, q: factors[q][i], inverse_pivots)
    for k, i, condition in group.swaps:
        rhs = _swap(graph, rhs, k, i, condition)
    y = _forward(graph, rhs, lambda i, q: factors[i][q])
    return _back(graph, y, lambda i, q: factors[i][q], inverse_pivots)


def _swap(graph, rows, k, i, condition):
    rows = [row[:] for row in rows]
    if condition == sp.true:
        rows[k], rows[i] = rows[i], rows[k]
        return rows
    upper, lower = rows[k], rows[i]
    rows[k] = [_select(graph, condition, y, z) for z, y in zip(upper, lower)]
    rows[i] = [_select(graph, condition, z, y) for z, y in zip(upper, lower)]
    return rows


def _read_entries(group):
    """(i, k, which entries of A it stands for): Cholesky reads the lower triangle, as if A were symmetric."""
    n = len(group.a)
    if group.kind != "cholesky":
        return [(i, k, [(i, k)]) for i in range(n) for k in range(n)]
    return [(i, k, [(i, k)] if i == k else [(i, k), (k, i)]) for i in range(n) for k in range(i + 1)]


def reverse_rule(graph, group: SolveGroup, adjoints: list, contributions, active) -> None:
    """Add the solve's contributions to the adjoints of the operands of A and b, given the adjoints of
    its members (n x m, 0 where none)."""
    if all(v == 0 for row in adjoints for v in row):
        return
    y = _solve_transposed(graph, group, adjoints)
    for i, row in enumerate(group.b):
        for j, operand in enumerate(row):
            if not _is_number(operand) and operand in active and y[i][j] != 0:
                contributions[operand].append(y[i][j])
    m = len(group.b[0])
    for i, k, uses in _read_entries(group):
        operand = group.a[i][k]
        if _is_number(operand) or operand not in active:
            continue
        term = sp.Add(*(y[r][j] * group.x[c][j] for r, c in uses for j in range(m)))
        if term != 0:
            contributions[operand].append(-graph.lower(term))


def forward_rule(graph, group: SolveGroup, tangent: dict) -> None:
    """Set the tangents of the solve's members from the tangents of A's and b's operands."""
    n, m = len(group.b), len(group.b[0])
    a_dot = [[sp.S.Zero] * n for _ in range(n)]
    for i, k, uses in _read_entries(group):
        operand = group.a[i][k]
        if not _is_number(operand) and operand in tangent:
            for r, c in uses:
                a_dot[r][c] = tangent[operand]
    residual = [[(tangent.get(group.b[i][j], sp.S.Zero) if not _is_number(group.b[i][j]) else sp.S.Zero)
                 - sp.Add(*(a_dot[i][k] * group.x[k][j] for k in range(n))) for j in range(m)] for i in range(n)]
    if all(v == 0 for row in residual for v in row):
        return
    residual = [[graph.lower(v) for v in row] for row in residual]
    x_dot = _solve_direct(graph, group, residual)
    for row, members in zip(x_dot, group.x):
        for value, member in zip(row, members):
            if value != 0:
                tangent[member] = value
