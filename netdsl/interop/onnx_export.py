"""`netdsl export model.net -o model.onnx`: a netdsl graph as an ONNX model.

The graph is written node by node through one table, ``EXPORTERS``: an entry per registry op
(``netdsl.interop.onnx_ops``), each fused op's derived from its parts here; ``UNSUPPORTED`` names the ops
that cannot be written, with the reason. Weights become initializers under their netdsl parameter names
(PyTorch state_dict names); inputs and outputs keep the names of the .net file; a symbolic dim (``N``,
``T``, ``H``) is a dynamic axis (``dim_param``). A size that an op needs at run time (``reshape(N, T, 8,
-1)``, ``pos[:T]``) is computed in the graph from the shape of the input that declares the dim, so the
model runs at any size, not only the one it was exported at (a floor division of sizes is ONNX's integer
Div, which equals it for the non-negative sizes a valid model has).

Fused graphs (``--pipeline O1``) are written too: each fused node is decomposed back into its base op, the
batchnorm it folded (as an inference batchnorm) and its epilogue, so the ONNX model never depends on how
netdsl fuses. ``onnx`` is imported inside functions only: the CLI imports this module at start-up.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import NetDSLError
from ..ir.dims import Dim, SymDim
from ..ir.graph import Graph, Node
from ..ops import REGISTRY, OpKind
from ..ops.epilogue import Epilogue
from . import onnx_ops

DEFAULT_OPSET = 20  # LayerNormalization needs 17, Reduce* with axes as an input 18, Gelu 20
MIN_OPSET, MAX_OPSET = 18, 21
# one protobuf message holds at most 2 GiB; the weights go inline
MAX_PROTO_BYTES = 2**31 - 2**20
ELEM_TYPES = {"f32": "FLOAT", "i64": "INT64", "i32": "INT32", "bool": "BOOL"}


def add_parser(sub) -> None:
    """The `netdsl export` subcommand (called by netdsl.cli; keep this module's imports light)."""
    c = sub.add_parser("export", help="write the model as ONNX (weights inside; symbolic dims as dynamic axes)")
    c.add_argument("model", help="a .net file")
    c.add_argument("--network", help="which network of the file (when it has several)")
    c.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    c.add_argument("--weights", help=".safetensors or .npz weights (default: seeded initialisation)")
    c.add_argument("--seed", default="0", help="seed of the default weights (0 or more)")
    c.add_argument("--pipeline", default="O0", help="passes to run first (O0 = none, O1 = all)")
    c.add_argument("--opset", default=str(DEFAULT_OPSET),
                   help=f"ONNX opset to write, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    c.set_defaults(fn=run)


class Builder:
    """Collects ONNX nodes, names and constants while a graph is written; the op table calls it."""

    def __init__(self, graph: Graph, opset: int):
        from onnx import helper

        self.helper = helper
        self.graph = graph
        self.opset = opset
        self.nodes: list = []
        self.used: set[str] = set(graph.used_params()) | {v.name for v in graph.inputs} | set(graph.output_names)
        self.names: dict[str, str] = {v.name: v.name for v in graph.inputs}  # netdsl value -> ONNX tensor
        self._dims: dict[Any, str] = {}  # symbolic dims already computed -> their [1] int64 tensor
        self._sources = _dim_sources(graph)
        self.current: Node | None = None

    # -- names -----------------------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        """A tensor name not used yet, from ``base``."""
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs) -> Any:
        """Add one node; return its output name (or the list of them when ``outputs`` > 1)."""
        where = self.current.name if self.current is not None and self.current.name else op_type
        outs = [self.fresh(f"{where}/{op_type}") for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, name=self.fresh(f"{where}/{op_type}#"),
                                                **{k: v for k, v in attrs.items() if v is not None}))
        return outs[0] if outputs == 1 else outs

    # -- constants -----------------------------------------------------------------------------

    def const(self, value, dtype=np.float32) -> str:
        """A Constant node holding ``value`` (kept out of the initializers, which are the weights)."""
        from onnx import numpy_helper

        name = self.fresh("const")
        self.nodes.append(self.helper.make_node("Constant", [], [name], name=self.fresh("const#"),
                                                value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name)))
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.const(list(values), np.int64)

    # -- sizes at run time ---------------------------------------------------------------------

    def dim(self, d: Dim) -> str:
        """A [1] int64 tensor holding the size ``d`` (a constant, or computed from the inputs' shapes)."""
        if isinstance(d, (int, np.integer)):
            return self.ints([int(d)])
        if d in self._dims:
            return self._dims[d]
        acc = None
        for atom, coeff in d.terms:
            if isinstance(atom, str):
                if atom not in self._sources:
                    raise NetDSLError(f"cannot export: the size `{atom}` is not a dim of any input of "
                                      f"`{self.graph.name}`", hint="name each symbolic dim alone in an input type")
                value, axis = self._sources[atom]
                term = self.op("Shape", [value], start=axis, end=axis + 1)
            else:
                term = self.op("Div", [self.dim(atom.expr), self.ints([atom.divisor])])
            if coeff != 1:
                term = self.op("Mul", [term, self.ints([coeff])])
            acc = term if acc is None else self.op("Add", [acc, term])
        if d.const:
            acc = self.op("Add", [acc, self.ints([d.const])])
        self._dims[d] = acc
        return acc

    def shape(self, dims: Sequence[Dim]) -> str:
        """A 1-D int64 tensor of the sizes ``dims`` (one constant when they are all static)."""
        if all(isinstance(d, (int, np.integer)) for d in dims):
            return self.ints([int(d) for d in dims])
        return self.op("Concat", [self.dim(d) for d in dims], axis=0)

    def scalar_dim(self, value: str, axis: int) -> str:
        """The size of dim ``axis`` of tensor ``value`` as a rank-0 int64 tensor (for Range)."""
        end = axis + 1 if axis != -1 else None
        return self.op("Squeeze", [self.op("Shape", [value], start=axis, end=end)])


# ---------------------------------------------------------------------------------------------
# fused ops (--pipeline O1): decomposed into their base op, the folded batchnorm and the epilogue
# ---------------------------------------------------------------------------------------------

def _epilogue(b, n, y: str, residual: str | None) -> str:
    """acc -> act1 -> (+ residual) -> act2, each activation exported by its own entry."""
    ep = Epilogue.of(n.attrs)

    def act(which: str, name: str, attrs, x: str) -> str:
        slope = n.params.get("slope" + which)
        pseudo = Node(name, n.outputs[:1], n.outputs[:1], attrs, {"weight": slope} if slope else {}, n.name)
        return EXPORTERS[name](b, pseudo, [x])

    if ep.act1 != "none":
        y = act("1", ep.act1, ep.act1_attrs, y)
    if ep.residual:
        y = b.op("Add", [y, residual])
    if ep.act2 != "none":
        y = act("2", ep.act2, ep.act2_attrs, y)
    return y


def _fused_bn(b, n, y: str, axis: int) -> str:
    p = n.params
    return onnx_ops.batchnorm(b, y, (p["bn_weight"], p["bn_bias"], p["bn_mean"], p["bn_var"]), n.attrs["bn_eps"],
                     n.outputs[0].type.rank, axis)


def _fused_out(b, n, xs):
    base = REGISTRY[REGISTRY[n.op].base]
    y = EXPORTERS[base.name](b, n.replace(op=base.name, inputs=n.inputs[:1]), xs[:1])
    if n.attrs.get("bn"):
        y = _fused_bn(b, n, y, base.axis_of(n.attrs, n.outputs[0].type.rank))
    return _epilogue(b, n, y, xs[-1] if n.attrs["residual"] else None)


def _fused_norm(b, n, xs):
    base = REGISTRY[n.op].base
    x = b.op("Add", xs[:2]) if n.attrs.get("add_before") else xs[0]
    y = EXPORTERS[base](b, n.replace(op=base, inputs=n.inputs[:1]), [x])
    return _epilogue(b, n, y, xs[-1] if n.attrs["residual"] else None)


def _fused_pointwise(b, n, xs):
    y = _fused_bn(b, n, xs[0], 1) if n.attrs["bn"] else xs[0]
    y = _epilogue(b, n, y, xs[-1] if n.attrs["residual"] else None)
    return y if y != xs[0] else b.op("Identity", [y])


# The whole table: every op of netdsl.ops.REGISTRY that exports. A fused op is derived from its base
# (netdsl.ops.fused), and so is its exporter.
EXPORTERS: dict[str, onnx_ops.Exporter] = dict(onnx_ops.EXPORTERS)
UNSUPPORTED = onnx_ops.UNSUPPORTED
for _name, _op in REGISTRY.items():
    if _op.kind is OpKind.FUSED and _name not in EXPORTERS:
        if _op.base is None:
            EXPORTERS[_name] = _fused_pointwise
        elif REGISTRY[_op.base].kind is OpKind.OUT_FUSABLE:
            EXPORTERS[_name] = _fused_out
        elif REGISTRY[_op.base].kind is OpKind.NORM:
            EXPORTERS[_name] = _fused_norm


def _dim_sources(graph: Graph) -> dict[str, tuple[str, int]]:
    """Each symbolic dim -> (an input that declares it alone, its axis there)."""
    out: dict[str, tuple[str, int]] = {}
    for v in graph.inputs:
        for axis, d in enumerate(v.type.shape):
            if isinstance(d, SymDim) and len(d.terms) == 1 and d.const == 0 and d.terms[0][1] == 1 \
                    and isinstance(d.terms[0][0], str):
                out.setdefault(d.terms[0][0], (v.name, axis))
    return out


def _value_info(helper, name: str, t, what: str):
    from onnx import TensorProto

    if t.dtype not in ELEM_TYPES:
        raise NetDSLError(f"cannot export {what} `{name}` of type {t}: ONNX export writes f32 models",
                          hint="declare the network's float inputs as f32 (weights are float32)")
    dims = [d if isinstance(d, int) else str(d) for d in t.shape]
    return helper.make_tensor_value_info(name, getattr(TensorProto, ELEM_TYPES[t.dtype]), dims)


def _rename_outputs(nodes: list, start: int, want: Mapping[str, str]) -> None:
    """Give the tensors ``want`` maps the names of the netdsl values they are (readable ONNX graphs)."""
    for n in nodes[start:]:
        n.output[:] = [want.get(o, o) for o in n.output]
        n.input[:] = [want.get(i, i) for i in n.input]


def check_supported(graph: Graph) -> None:
    """Every node's op exports; else a NetDSLError naming the op, the node and what to do."""
    for node in graph.nodes:
        if node.op in UNSUPPORTED or node.op not in EXPORTERS:
            reason = UNSUPPORTED.get(node.op, "no ONNX exporter is registered for it")
            raise NetDSLError(f"cannot export `{node.op}` (node `{node.name}`) to ONNX: {reason}", node.loc,
                              hint="export the unfused graph (--pipeline O0), or rewrite this layer with ops that "
                                   "export")


def export_onnx(graph: Graph, weights: Mapping[str, np.ndarray] | None, path: str | None = None, *,
                opset: int = DEFAULT_OPSET):
    """``graph`` with ``weights`` as an ``onnx.ModelProto`` (checked with ``onnx.checker``); written atomically
    to ``path`` when one is given. Raises NetDSLError for an op or a type that cannot be exported.

    ``weights=None`` writes the graph alone: each parameter is then a graph input of its own name and shape
    (fed with the weights at run time), which keeps a model of hundreds of megabytes out of the protobuf."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ..files import check_writable, write_atomically
    from ..params import check_weights

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise NetDSLError(f"cannot export with opset {opset}", hint=f"choose an opset from {MIN_OPSET} to {MAX_OPSET}")
    if path is not None:
        check_writable(path, "ONNX file")
    check_supported(graph)
    params = graph.used_params()
    if weights is not None:
        weights = check_weights(graph, weights)
        if sum(weights[k].size * 4 for k in params) > MAX_PROTO_BYTES:
            raise NetDSLError(f"cannot export `{graph.name}`: its weights exceed the 2 GiB of one ONNX file")
    nodes = _write_nodes(Builder(graph, opset))
    inputs = [_value_info(helper, v.name, v.type, "input") for v in graph.inputs]
    outputs = [_value_info(helper, name, v.type, "output") for name, v in zip(graph.output_names, graph.outputs)]
    if weights is None:
        inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(spec.shape)) for k, spec in params.items()]
        inits = []
    else:
        inits = [numpy_helper.from_array(np.ascontiguousarray(weights[k], dtype=np.float32), k) for k in params]
    model = helper.make_model(helper.make_graph(nodes, graph.name, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", opset)], producer_name="netdsl")
    model.ir_version = min(model.ir_version, 10)  # what onnxruntime reads
    data = model.SerializeToString()  # once: the checker and the file take the same bytes
    try:
        onnx.checker.check_model(data, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise NetDSLError(f"cannot export `{graph.name}`: the ONNX model fails onnx.checker: {e}",
                          hint="this is a defect of netdsl's ONNX export: please report it with the model") from None
    if path is not None:
        write_atomically(path, lambda tmp: Path(tmp).write_bytes(data), "ONNX file")
    return model


def _write_nodes(b: Builder) -> list:
    """The ONNX nodes of ``b.graph``: each node through its exporter, its results renamed after the netdsl
    values, and an Identity naming each output as the .net file does."""
    graph = b.graph
    for node in graph.nodes:
        b.current, start = node, len(b.nodes)
        outs = EXPORTERS[node.op](b, node, [b.names[v.name] for v in node.inputs])
        outs = [outs] if isinstance(outs, str) else list(outs)
        produced = {o for n in b.nodes[start:] for o in n.output}
        want: dict[str, str] = {}
        for v, name in zip(node.outputs, outs, strict=True):
            if name in produced and name not in want and v.name not in b.used:
                want[name] = v.name
                b.used.add(v.name)
            b.names[v.name] = want.get(name, name)
        _rename_outputs(b.nodes, start, want)
    b.current = None
    for out_name, v in zip(graph.output_names, graph.outputs):
        if b.names[v.name] != out_name:  # (an input given back as it is keeps its name)
            b.nodes.append(b.helper.make_node("Identity", [b.names[v.name]], [out_name], name=b.fresh(f"{out_name}#")))
    return _live(b.nodes, set(graph.output_names))


def _live(nodes: list, live: set[str]) -> list:
    """``nodes`` without those whose results nothing reads: a result the file drops (``out, _, _ = x -> lstm``)
    still had its exporter build the ONNX nodes that compute it."""
    kept = []
    for n in reversed(nodes):
        if live & set(n.output):
            kept.append(n)
            live |= set(n.input)
    return kept[::-1]


def run(args) -> int:
    """The CLI: load, (run the passes), export, print one line."""
    from ..frontend import load
    from ..files import check_writable
    from ..params import init_weights, load_weights, parse_seed

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise NetDSLError("`netdsl export` needs the onnx package",
                          hint="install the onnx extra: pip install 'netdsl[onnx]'") from None
    opset = int(args.opset) if re.fullmatch(r"[0-9]{1,4}", args.opset, re.ASCII) else -1
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise NetDSLError(f"bad --opset `{args.opset}`", hint=f"give an opset from {MIN_OPSET} to {MAX_OPSET}")
    seed = parse_seed(args.seed)
    source = load(args.model, args.network)
    check_writable(args.output, "ONNX file")
    graph = source
    if args.pipeline != "O0":  # passes rewrite the graph only; the weights keep their names
        from ..passes import run_pipeline

        graph = run_pipeline(source, args.pipeline)
    check_supported(graph)  # before the weights are made: they may take a while
    weights = load_weights(args.weights, source) if args.weights else init_weights(source, seed)
    model = export_onnx(graph, weights, args.output, opset=opset)
    print(f"wrote {args.output}: {len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers, "
          f"opset {opset}")
    return 0


__all__ = ["export_onnx", "check_supported", "Builder"]
