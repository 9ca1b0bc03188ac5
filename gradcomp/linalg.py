"""``gc.solve(A, b)``: the solution of a dense linear system as one node of the expression DAG.

The user's side only: ``LinearSolve`` holds A and b, ``SolveEntry`` is one
component of the solution.  derive lowers a LinearSolve once (an LU
factorization with partial pivoting, or Cholesky) and differentiates it by the
adjoint rule, reusing the factors; SymPy never sees A⁻¹.
"""

from __future__ import annotations

import sympy as sp
from sympy.core.symbol import Str

from .errors import CompileError

KINDS = {None: "lu", "general": "lu", "pos": "cholesky"}
"""``assume=`` -> the factorization: partial-pivoting LU for any square A, Cholesky for a symmetric positive
definite one (it reads A's lower triangle)."""


class LinearSolve(sp.Basic):
    """A x = b for square A (n x n) and b (n x m): args ``(n, m, kind, *A row by row, *b row by row)``."""

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.args[0]), int(self.args[1])

    @property
    def kind(self) -> str:
        return self.args[2].name

    @property
    def matrix(self) -> list[list]:
        n, _ = self.shape
        return [list(self.args[3 + i * n:3 + (i + 1) * n]) for i in range(n)]

    @property
    def rhs(self) -> list[list]:
        n, m = self.shape
        start = 3 + n * n
        return [list(self.args[start + i * m:start + (i + 1) * m]) for i in range(n)]

    def _sympystr(self, printer) -> str:
        name = "cholesky_solve" if self.kind == "cholesky" else "solve"
        return f"{name}({printer.doprint(sp.Matrix(self.matrix))}, {printer.doprint(sp.Matrix(self.rhs))})"


class SolveEntry(sp.Expr):
    """Component (i, j) of a LinearSolve's solution: args ``(solve, i, j)``."""

    is_commutative = True

    @property
    def solve(self) -> LinearSolve:
        return self.args[0]

    @property
    def index(self) -> tuple[int, int]:
        return int(self.args[1]), int(self.args[2])

    def _eval_derivative(self, symbol):
        raise CompileError(
            f"SymPy cannot differentiate {self.func.__name__}; let gradcomp do it (compile the expression and "
            f"call its jacobian/vjp, or gc.derivative).")

    def _sympystr(self, printer) -> str:
        i, j = self.index
        return f"{printer.doprint(self.solve)}[{i}, {j}]"


def solve(A, b, assume: str | None = None) -> sp.Matrix:
    """The solution x of ``A x = b`` as a Matrix of b's shape (a column for a vector b), its entries resting
    on one solve node: computed by one factorization per point, however many entries are used, and
    differentiated by the adjoint rule.  ``assume="pos"``: A is symmetric positive definite (Cholesky on its
    lower triangle).  A singular A gives inf or NaN at that point."""
    if assume not in KINDS:
        raise CompileError(f"assume={assume!r} is not known; use None (any square A, LU with partial pivoting) "
                           f"or 'pos' (symmetric positive definite A, Cholesky).")
    matrix = _matrix(A, "A")
    n, columns = matrix.shape
    if n != columns or n == 0:
        raise CompileError(f"A must be a square, non-empty matrix; got shape {matrix.shape}.")
    column = not isinstance(b, sp.MatrixBase) and not (isinstance(b, (list, tuple)) and b
                                                        and isinstance(b[0], (list, tuple)))
    rhs = _matrix(sp.Matrix(b) if column else b, "b")
    if rhs.shape[0] != n or rhs.shape[1] == 0:
        raise CompileError(f"b must have {n} rows (A is {n} x {n}) and at least one column; got shape {rhs.shape}.")
    m = rhs.shape[1]
    node = LinearSolve(sp.Integer(n), sp.Integer(m), Str(KINDS[assume]), *matrix, *rhs)
    return sp.Matrix(n, m, [SolveEntry(node, sp.Integer(i), sp.Integer(j)) for i in range(n) for j in range(m)])


def _matrix(value, what: str) -> sp.Matrix:
    try:
        matrix = sp.Matrix(value)
    except (TypeError, ValueError, sp.SympifyError) as exc:
        raise CompileError(f"{what} must be a SymPy Matrix or a nested list of expressions; got "
                           f"{type(value).__name__}: {exc}") from exc
    for entry in matrix:
        if not isinstance(entry, sp.Expr):
            raise CompileError(f"{what} holds {entry!r} ({type(entry).__name__}), not a numeric expression.")
    return matrix
