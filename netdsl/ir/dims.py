"""Symbolic dimensions.

A dimension is an ``int`` or a ``SymDim``: an integer-valued affine expression over symbols (``N``,
``H``, ...) and floor divisions of such expressions. Ops write their shape rules with ordinary
arithmetic (``(h + 2 * p - k) // s + 1``) and get canonical expressions back, so that two paths of a
residual block that both compute ``(H - 1)//2 + 1`` compare equal. Results with no symbol left are
plain ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

Dim = Union[int, "SymDim"]

# How deeply floor divisions may nest in one size expression. Most shape rules keep expressions flat
# (``((H - 1)//2 + 1 - 1)//2`` is ``(H - 1)//4``), but a scaling between divisions cannot be merged:
# 200 pool -> upsample pairs on a symbolic H nest 200 deep, and every operation on a dim (printing,
# hashing, evaluating) recurses once per level.
MAX_DEPTH = 32


class DimTooDeep(ValueError):
    """A size expression would nest floor divisions deeper than MAX_DEPTH."""


@dataclass(frozen=True)
class FloorDiv:
    """``expr // divisor`` where ``expr`` is not a multiple of ``divisor``."""

    expr: "SymDim"
    divisor: int

    def __str__(self) -> str:
        return f"({self.expr})//{self.divisor}"

    def sort_key(self) -> str:
        return "~" + str(self)


Atom = Union[str, FloorDiv]


def _atom_key(atom: Atom) -> str:
    return atom if isinstance(atom, str) else atom.sort_key()


@dataclass(frozen=True)
class SymDim:
    terms: tuple[tuple[Atom, int], ...]  # sorted (atom, coefficient) pairs, no zero coefficient
    const: int = 0

    @staticmethod
    def symbol(name: str) -> "SymDim":
        return SymDim(((name, 1),), 0)

    @staticmethod
    def _make(terms: dict, const: int) -> Dim:
        kept = tuple(sorted(((a, c) for a, c in terms.items() if c), key=lambda t: _atom_key(t[0])))
        return SymDim(kept, const) if kept else const

    def __add__(self, other: Dim) -> Dim:
        other = _as_sym(other)
        terms = dict(self.terms)
        for atom, coeff in other.terms:
            terms[atom] = terms.get(atom, 0) + coeff
        return SymDim._make(terms, self.const + other.const)

    __radd__ = __add__

    def __neg__(self) -> Dim:
        return SymDim._make({a: -c for a, c in self.terms}, -self.const)

    def __sub__(self, other: Dim) -> Dim:
        return self + (-_as_sym(other))

    def __rsub__(self, other: Dim) -> Dim:
        return _as_sym(other) + (-self)

    def __mul__(self, k: Dim) -> Dim:
        if isinstance(k, SymDim):
            raise TypeError("product of two symbolic dimensions is not affine")
        return SymDim._make({a: c * k for a, c in self.terms}, self.const * k)

    __rmul__ = __mul__

    def __floordiv__(self, k: Dim) -> Dim:
        if isinstance(k, SymDim) or k <= 0:
            raise TypeError("symbolic dimensions divide only by positive integers")
        if k == 1:
            return self
        exact = {a: c // k for a, c in self.terms if c % k == 0}
        rest = {a: c for a, c in self.terms if c % k != 0}
        quotient = SymDim._make(exact, self.const // k)
        if not rest:
            return quotient
        remainder = SymDim._make(rest, self.const % k)
        if len(rest) == 1:
            (atom, coeff), = rest.items()
            if isinstance(atom, FloorDiv) and coeff == 1:  # (x // a + r) // k == (x + a*r) // (a*k)
                return quotient + (atom.expr + atom.divisor * (self.const % k)) // (atom.divisor * k)
        if _depth(remainder) >= MAX_DEPTH:
            raise DimTooDeep(f"it would nest more than {MAX_DEPTH} floor divisions")
        return quotient + SymDim._make({FloorDiv(remainder, k): 1}, 0)

    def symbols(self) -> set[str]:
        out: set[str] = set()
        for atom, _ in self.terms:
            out |= {atom} if isinstance(atom, str) else atom.expr.symbols()
        return out

    def evaluate(self, env: Mapping[str, int]) -> int:
        total = self.const
        for atom, coeff in self.terms:
            if isinstance(atom, str):
                value = env[atom]
            else:
                value = evaluate(atom.expr, env) // atom.divisor
            total += coeff * value
        return total

    def __str__(self) -> str:
        out = ""
        for atom, coeff in self.terms:
            name = str(atom)
            piece = name if abs(coeff) == 1 else f"{abs(coeff)}*{name}"
            if not out:
                out = piece if coeff > 0 else f"-{piece}"
            else:
                out += f" + {piece}" if coeff > 0 else f" - {piece}"
        if self.const:
            out += f" + {self.const}" if self.const > 0 else f" - {-self.const}"
        return out

    __repr__ = __str__


def _depth(d: Dim) -> int:
    """How deeply floor divisions nest in ``d`` (at most MAX_DEPTH, so this recursion is bounded)."""
    if not isinstance(d, SymDim):
        return 0
    return max((1 + _depth(a.expr) for a, _ in d.terms if isinstance(a, FloorDiv)), default=0)


def _as_sym(d: Dim) -> SymDim:
    return d if isinstance(d, SymDim) else SymDim((), int(d))


def evaluate(d: Dim, env: Mapping[str, int]) -> int:
    """The value of a dimension once its symbols are bound."""
    return d.evaluate(env) if isinstance(d, SymDim) else d


def format_dim(d: Dim) -> str:
    return str(d)
