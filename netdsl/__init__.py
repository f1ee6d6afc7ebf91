"""netdsl: a declarative language for neural networks and a compiler to fused Triton kernels.

    import netdsl
    graph = netdsl.load("examples/resnet18.net")          # parse + elaborate -> typed IR
    weights = netdsl.init_weights(graph)                    # seeded, deterministic
    out = netdsl.reference.run(graph, {"image": x}, weights) # NumPy meaning of the network
    model = netdsl.compile("examples/resnet18.net", dtype="fp16")  # a torch.nn.Module (Triton kernels)
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .backends import reference
from .compiler import compile  # noqa: A004  (netdsl.compile, as torch.compile)
from .errors import NetDSLError, SourceLoc
from .frontend import load, load_source, parse
from .ir.graph import Graph
from .params import init_weights, load_weights, parameter_count, random_weights, save_weights

try:
    __version__ = _version("netdsl")  # the installed distribution's (pyproject.toml)
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "__version__", "NetDSLError", "SourceLoc", "Graph", "load", "load_source", "parse", "reference", "init_weights",
    "random_weights", "load_weights", "save_weights", "parameter_count", "compile",
]
