"""Lowerings of the sequence and tensor ops: torch.matmul of activations (batched GEMM), the copies torch
makes (transpose/permute, split/chunk, expand, slice, select), parameters read as values, embeddings,
positional encodings, attention and the recurrent layers. See ``lower`` for what a lowering is.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import NetDSLError
from ...ir.dims import SymDim
from ...ir.graph import Node
from ...kernels import attention, bmm, embedding, pointwise, recurrence
from ...kernels._host import KernelError
from ...ops import REGISTRY
from ...ops.sequence import sinusoidal_table
from ...passes.layout import NHWC
from .lower_base import LowerCtx, Step, to_ir
from .prepared import kept_across_calls


def lower_matmul(node: Node, ctx: LowerCtx) -> Step:
    """torch.matmul of two activations: batch dims broadcast and merged into one, rank-1 operands
    made matrices, then one batched GEMM (strided operands: a transposed view costs nothing)."""
    ra, rb = (v.type.rank for v in node.inputs)

    def run(inputs, out):
        a, b = inputs
        a = a.unsqueeze(0) if ra == 1 else a
        b = b.unsqueeze(-1) if rb == 1 else b
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])  # numpy's: torch's imports sympy on first use
        (m, k), n = a.shape[-2:], b.shape[-1]
        a3 = a.expand(*batch, m, k).reshape(-1, m, k)
        b3 = b.expand(*batch, k, n).reshape(-1, k, n)
        y = bmm.bmm(a3, b3, out=out.view(-1, m, n), allow_tf32=ctx.allow_tf32)
        return y.view(out.shape)

    return Step(node, run, kernel="bmm")


def lower_permute(node: Node, ctx: LowerCtx) -> Step:
    """transpose / permute: a copy (by torch) into the output's storage, in the IR's order (unless the
    layout plan keeps it a strided view: then the module permutes strides and nothing runs)."""
    perm = REGISTRY[node.op].permutation(node.attrs, node.inputs[0].type.rank)

    def run(inputs, out):
        return out.copy_(inputs[0].permute(*perm))

    return Step(node, run, kernel="layout copy")


def lower_split(node: Node, ctx: LowerCtx) -> Step:
    """split / chunk: each piece copied (by torch) into its planned storage, in the IR's order."""
    sizes = [v.type.shape[node.attrs["dim"] % v.type.rank] for v in node.outputs]
    dim = node.attrs["dim"]

    def run(inputs, outs):
        for out, piece in zip(outs, torch.split(inputs[0], sizes, dim=dim), strict=True):
            out.copy_(piece)
        return tuple(outs)

    return Step(node, run, kernel="layout copy")


def lower_expand(node: Node, ctx: LowerCtx) -> Step:
    """expand: the size-1 dims repeated, copied (by torch) into the output's storage, in the IR's order."""
    def run(inputs, out):
        return out.copy_(inputs[0].expand(out.shape))

    return Step(node, run, kernel="layout copy")


def lower_parameter(node: Node, ctx: LowerCtx) -> Step:
    """A parameter read as a value: the weight itself, cast once; nothing runs per call."""
    value = ctx.tensor(ctx.param(node, "value"))  # in the IR's order (its layout is ORDERED)

    def run(inputs, out):
        return value

    return Step(node, run, kernel="")


def _ir_order(t: torch.Tensor, layout: str | None) -> torch.Tensor:
    """A tensor stored in ``layout`` viewed in the IR's dim order."""
    return to_ir(t) if t.dim() == 4 and layout == NHWC else t


def _sizes_named_by(pairs) -> dict[str, int]:
    """The sizes of the symbolic dims that some dim of these (IR type, concrete shape) pairs names alone, as
    ``c * T + k`` (``T``, ``T - 1``, ``2*T``)."""
    sizes: dict[str, int] = {}
    for t, shape in pairs:
        for d, n in zip(t.shape, shape):
            if isinstance(d, SymDim) and len(d.terms) == 1 and isinstance(d.terms[0][0], str):
                ((sym, c),) = d.terms
                if (n - d.const) % c == 0:
                    sizes.setdefault(sym, (n - d.const) // c)
    return sizes


def _index_attrs(node: Node, names: tuple[str, ...]):
    """A slice's or select's bounds as functions of the call's shapes: a symbolic bound is evaluated with the
    sizes its node's input and output shapes name. One whose dims they do not name cannot run here."""
    values = {k: node.attrs[k] for k in names}
    types = (node.inputs[0].type, node.output.type)
    named = {d.terms[0][0] for t in types for d in t.shape
             if isinstance(d, SymDim) and len(d.terms) == 1 and isinstance(d.terms[0][0], str)}
    for k, v in values.items():
        if isinstance(v, SymDim) and not v.symbols() <= named:
            missing = ", ".join(sorted(v.symbols() - named))
            raise NetDSLError(f"`{node.op}` {k}={v}: the Triton backend reads the sizes of {missing} from this "
                              f"node's shapes ({node.inputs[0].type} -> {node.output.type}), which do not name them",
                              node.loc, hint="slice a tensor whose shape holds that dim, or run the reference backend")

    def bound(x_ir: torch.Tensor, y_ir: torch.Tensor) -> dict:
        if not any(isinstance(v, SymDim) for v in values.values()):
            return values
        sizes = _sizes_named_by([(types[0], x_ir.shape), (types[1], y_ir.shape)])
        return {k: v.evaluate(sizes) if isinstance(v, SymDim) else v for k, v in values.items()}

    return bound


def lower_slice(node: Node, ctx: LowerCtx) -> Step:
    """x[..., start:end:step] along one dim: a copy (by torch) of that strided view into the output's storage.
    The node reads any layout (``OpDef.axis`` ANY_LAYOUT): an NHWC map and its NHWC output are viewed in the
    IR's order, so the copy walks them as stored and nothing is converted. With the sizes bound, the slice
    must have the length the plan gave it: a symbolic bound that falls outside the dim is an error here."""
    d, step = node.attrs["dim"] % node.inputs[0].type.rank, node.attrs["step"]
    bound = _index_attrs(node, ("start", "end"))

    def run(inputs, out):
        x, y = _ir_order(inputs[0], ctx.layout.reads_in(node)), _ir_order(out, ctx.layout.get(node.output.name))
        b = bound(x, y)
        first, last, _ = slice(b["start"], b["end"], step).indices(x.shape[d])
        piece = x[(slice(None),) * d + (slice(first, last, step),)]
        if piece.shape[d] != y.shape[d]:
            raise NetDSLError(f"`slice` [{b['start']}:{b['end'] if b['end'] is not None else ''}:{step}] of dim {d} "
                              f"of size {x.shape[d]} has {piece.shape[d]} elements, but {node.output.type} has "
                              f"{y.shape[d]} with these sizes", node.loc,
                              hint="a symbolic bound (or a bound of a symbolic dim) must fall inside the dim when the "
                                   "network runs: the output size assumes it does not clamp")
        y.copy_(piece)
        return out

    return Step(node, run, kernel="layout copy")


def lower_select(node: Node, ctx: LowerCtx) -> Step:
    """x.select(dim, index): a copy (by torch) of that view into the output's storage (in the IR's order: the
    node may read an NHWC map, its output has a rank other than 4)."""
    d = node.attrs["dim"] % node.inputs[0].type.rank
    bound = _index_attrs(node, ("index",))

    def run(inputs, out):
        x, y = _ir_order(inputs[0], ctx.layout.reads_in(node)), _ir_order(out, ctx.layout.get(node.output.name))
        index = bound(x, y)["index"]
        if not -x.shape[d] <= index < x.shape[d]:
            raise NetDSLError(f"`select` index {index} is out of range for dim {d} of size {x.shape[d]}", node.loc,
                              hint=f"with the sizes bound, the index must name an element: "
                                   f"{-x.shape[d]} <= index < {x.shape[d]}")
        y.copy_(x.select(d, index))
        return out

    return Step(node, run, kernel="layout copy")


def lower_embedding(node: Node, ctx: LowerCtx) -> Step:
    """The row gather. Ids outside the table are counted by the kernel into a counter kept with the step
    (no host sync inside the call, so a call stays a list of launches a CUDA graph can hold); the module
    reads the count after the call (``Step.after``) and raises if it grew."""
    table = ctx.tensor(ctx.param(node, "weight"))
    bad = torch.zeros(1, dtype=torch.int32, device=ctx.device)

    def run(inputs, out):
        return embedding.embedding(inputs[0], table, out=out, check_ids=False, bad_ids=bad)

    def after():
        if bad.device.type == "meta":
            return
        count = int(bad.item())
        if count:
            bad.zero_()
            raise KernelError(f"embedding: {count} id(s) outside [0, {table.shape[0]}) "
                              f"(their output rows were written as zeros)")

    return Step(node, run, kernel="embedding", after=after)


def lower_positional_encoding(node: Node, ctx: LowerCtx) -> Step:
    """x + the sinusoidal table: one pointwise add of the table for this T (built once per shape)."""
    tables: dict[tuple, torch.Tensor] = {}

    def run(inputs, out):
        x = inputs[0]
        if tuple(x.shape) not in tables:
            with kept_across_calls():  # built once per shape: not work to repeat on every call
                t, d = x.shape[-2:]
                tables[tuple(x.shape)] = ctx.tensor(sinusoidal_table(t, d)).expand(x.shape).contiguous()
        return pointwise.add(x, tables[tuple(x.shape)], out=out)

    return Step(node, run, kernel="pointwise")


def lower_sdpa(node: Node, ctx: LowerCtx) -> Step:
    """The fused attention kernel: the L x S scores stay on chip. [N, L, E] operands get a head dim."""
    causal, scale = node.attrs["causal"], node.attrs["scale"]

    def four(t):
        return t.unsqueeze(1) if t.dim() == 3 else t

    def run(inputs, out):
        q, k, v = (four(t) for t in inputs[:3])
        mask = inputs[3] if len(inputs) > 3 else None
        if mask is not None:
            mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
        y = attention.attention(q, k, v, mask=mask, causal=causal, scale=scale, out=four(out),
                                allow_tf32=ctx.allow_tf32)
        return y.view(out.shape)

    return Step(node, run, kernel="attention")


def lower_recurrent(node: Node, ctx: LowerCtx) -> Step:
    """rnn / lstm / gru: per layer, one GEMM projecting every step's input for both directions (biases
    folded in) and one persistent recurrence kernel that loops over time (kernels/recurrence.py). Weights
    are packed once; the last layer writes the planned output sequence, every layer its slice of the
    planned final states (results in order: output, h_n, and c_n for an lstm)."""
    a = node.attrs
    dirs = ("", "_reverse")[:2 if a["bidirectional"] else 1]
    act = a.get("nonlinearity") or "tanh"

    def fp32(role):
        value = ctx.param(node, role)
        return None if value is None else torch.from_numpy(np.ascontiguousarray(value)).to(ctx.device)

    layers = [recurrence.pack_layer(node.op, [ctx.tensor(ctx.param(node, f"weight_ih_l{k}{s}")) for s in dirs],
                                    [ctx.tensor(ctx.param(node, f"weight_hh_l{k}{s}")) for s in dirs],
                                    [fp32(f"bias_ih_l{k}{s}") for s in dirs], [fp32(f"bias_hh_l{k}{s}") for s in dirs])
              for k in range(a["num_layers"])]
    d = len(dirs)

    def run(inputs, out):
        x, states = inputs[0], inputs[1:]
        h0, c0 = (list(states) + [None, None])[:2]
        out = list(out) if out is not None else [None] * len(node.outputs)
        n, h = x.shape[0], a["hidden_size"]
        for i in range(1, len(out)):  # the final states, when the plan gave them no storage
            if out[i] is None:
                out[i] = torch.empty((a["num_layers"] * d, n, h), dtype=x.dtype, device=x.device)
        seq = x
        for k, layer in enumerate(layers):
            part = slice(k * d, (k + 1) * d)
            last = k == len(layers) - 1
            seq, _, _ = recurrence.recurrent_layer(
                seq, layer, act=act, h0=None if h0 is None else h0[part], c0=None if c0 is None else c0[part],
                out=out[0] if last else None, h_n=out[1][part], c_n=out[2][part] if len(out) > 2 else None,
                allow_tf32=ctx.allow_tf32)
        out[0] = seq
        return tuple(out)

    return Step(node, run, kernel="recurrence")
