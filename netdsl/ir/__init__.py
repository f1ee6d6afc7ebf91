"""The IR: typed SSA graphs, their verifier and their text form."""

from .dims import Dim, SymDim
from .graph import Graph, Node, ParamSpec, Value
from .types import TensorType

__all__ = ["Dim", "SymDim", "Graph", "Node", "ParamSpec", "Value", "TensorType"]
