"""The AST of a .net file: plain dataclasses, each with the source span it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..errors import SourceLoc


@dataclass
class Num:
    value: int | float
    loc: SourceLoc


@dataclass
class Str:
    value: str
    loc: SourceLoc


@dataclass
class Bool:
    value: bool
    loc: SourceLoc


@dataclass
class Name:
    id: str
    loc: SourceLoc


@dataclass
class Kwarg:
    name: str
    value: "Expr"
    loc: SourceLoc


@dataclass
class Call:
    func: str
    args: list["Expr"]
    kwargs: list[Kwarg]
    loc: SourceLoc  # the whole call
    func_loc: SourceLoc  # just the name


@dataclass
class BinOp:
    op: str  # "+", "-", "*", "/", "//"
    left: "Expr"
    right: "Expr"
    loc: SourceLoc


@dataclass
class Neg:
    operand: "Expr"
    loc: SourceLoc


@dataclass
class Tuple:
    items: list["Expr"]
    loc: SourceLoc


@dataclass
class Qualified:
    """A dotted name, ``tok.weight`` or ``wpe.weight``: a parameter (a layer's, by its label and role, or
    one declared with ``param``) read as a tensor."""

    parts: list[str]
    loc: SourceLoc

    @property
    def id(self) -> str:
        return ".".join(self.parts)


@dataclass
class SliceIndex:
    """``start:stop:step`` in a subscript; a missing part is None."""

    start: "Expr | None"
    stop: "Expr | None"
    step: "Expr | None"
    loc: SourceLoc


@dataclass
class Subscript:
    """``x[:, 0]``, ``pos[:T]``: basic indexing, one index per leading dim."""

    value: "Expr"
    indices: list["Expr | SliceIndex"]
    loc: SourceLoc


@dataclass
class Stage:
    """One step of a chain: ``label: body * repeat``; body is a Call (bare names become calls
    without arguments) or a Group."""

    label: str | None
    body: Union[Call, "Group"]
    repeat: "Expr | None"
    loc: SourceLoc
    label_loc: SourceLoc | None = None


@dataclass
class Group:
    stages: list[Stage]
    loc: SourceLoc


@dataclass
class Chain:
    source: "Expr"
    stages: list[Stage]
    loc: SourceLoc


Expr = Union[Num, Str, Bool, Name, Call, BinOp, Neg, Tuple, Chain, Qualified, Subscript]


@dataclass
class Dim:
    value: int | str
    default: int | None
    loc: SourceLoc
    default_loc: SourceLoc | None = None  # the default's digits (`H=224`)


@dataclass
class TypeExpr:
    dtype: str
    dims: list[Dim]
    loc: SourceLoc
    dtype_loc: SourceLoc


@dataclass
class InputDecl:
    name: str
    type: TypeExpr | None
    loc: SourceLoc


@dataclass
class InputStmt:
    decls: list[InputDecl]
    loc: SourceLoc


@dataclass
class Assign:
    names: list[str]  # one, or several results bound at once (`q, k, v = ...`)
    value: Expr
    loc: SourceLoc  # the first target name
    name_locs: list[SourceLoc] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.names[0]


@dataclass
class ParamStmt:
    """``param name: [dims] = init``: a learned tensor of the network or block."""

    name: str  # may be dotted (`wpe.weight`)
    shape: list[Expr]
    init: Expr | None
    loc: SourceLoc  # the name


@dataclass
class OutputItem:
    name: str | None
    value: Expr
    loc: SourceLoc


@dataclass
class OutputStmt:
    items: list[OutputItem]
    loc: SourceLoc


Statement = Union[InputStmt, ParamStmt, Assign, OutputStmt]


@dataclass
class Import:
    """``import "file.net"`` (next to the importing file) or ``import name`` (the standard library)."""

    target: str
    is_file: bool
    loc: SourceLoc


@dataclass
class Param:
    name: str
    default: Expr | None
    loc: SourceLoc


@dataclass
class BlockDef:
    name: str
    params: list[Param]
    body: list[Statement]
    loc: SourceLoc  # the name


@dataclass
class NetworkDef:
    name: str
    body: list[Statement]
    loc: SourceLoc


@dataclass
class Module:
    blocks: dict[str, BlockDef] = field(default_factory=dict)
    networks: dict[str, NetworkDef] = field(default_factory=dict)
    file: str = "<string>"
    source: str = ""
    imports: list[Import] = field(default_factory=list)
