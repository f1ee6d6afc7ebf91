"""Recurrent layers (torch's nn.RNN, nn.LSTM, nn.GRU, batch first), forward only.

A layer maps x [N, T, I] to the sequence of its states h_t [N, T, D*H] (D = 2 directions
when bidirectional). Every step needs two products: W_ih x_t, which does not depend on
the recurrence, and W_hh h_{t-1}, which does. So a layer is two launches:

1. **One GEMM for every step and both directions** (:func:`matmul.linear`):
   xg [N*T, D*G] = x [N*T, I] @ [W_ih; W_ih_reverse]^T + bias, into an fp32 workspace
   (G = gates * H: rnn 1, lstm 4 (i, f, g, o), gru 3 (r, z, n)). The bias is b_ih + b_hh
   folded once at pack time, except GRU's b_hn, which sits inside r * (W_hn h + b_hn).
2. **One persistent recurrence kernel** (:func:`recurrence`): program (b, d) owns BLOCK_B
   batch rows and the whole hidden state of direction d, and loops over the T steps
   (direction 1: t = T-1 .. 0). Each step computes h_{t-1} @ W_hh^T with ``tl.dot`` (fp32
   accumulation; tensor cores for fp16/bf16, exact fp32 for fp32 unless TF32 is allowed),
   adds the step's slice of xg, applies the cell in fp32 (sigmoid/tanh from the shared
   activation table: exp of non-positive numbers only, no overflow for large inputs) and
   writes h_t into the output sequence, a strided view: direction d writes columns
   [d*H, (d+1)*H) of every row, so a bidirectional layer's concat costs nothing. The last
   step also writes h_n (and c_n) for its direction.

Two variants of the recurrence, chosen from the hidden size (the RESIDENT constexpr):

* **resident** (gates * H_pad^2 <= RESIDENT_ELEMENTS: rnn H <= 128, lstm/gru H <= 64; fp32 H <= 64):
  W_hh is loaded once, before the time loop, and stays on chip (registers, or shared
  memory for sm_90's wgmma) for all T steps; h and c stay in fp32 registers. Per step the
  only memory traffic is BLOCK_B x G of xg read and BLOCK_B x H of h_t written.
* **streamed** (larger H): the state does not fit one program's registers, so each step
  walks the hidden units in BLOCK_H column tiles and the reduction in BLOCK_K chunks,
  reading W_hh (H x G per step and program, from L2 after the first step) and the previous
  state from the output sequence, where it was just written: a ``tl.debug_barrier()``
  after each step's stores makes all of h_t visible to the whole CTA before the next step
  reads it. The fp32 carry (c for an LSTM, h for a GRU's z * h term) lives in a small fp32
  workspace [D, N, H], read and written once per step.

Either way the dot's left operand is h_{t-1} rounded to the I/O dtype (what the output
sequence holds); the cell's own state (c, and h for the GRU update) stays fp32.

Parallelism is cdiv(N, BLOCK_B) x D programs: a recurrence is sequential in time, and
splitting the hidden units over programs would need a grid-wide barrier every step. Hidden
sizes that are not multiples of 16 are padded to the block (masked lanes hold 0 and stay 0).
"""

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from . import matmul
from ._host import KernelError, Launch, check_io_dtype, interpreting, meta_tensor, needs_int64, run, spec_of
from .activations import apply_act
from .epilogue import Epilogue

CELLS = {"rnn": 1, "lstm": 4, "gru": 3}  # cell -> gates
# W_hh elements (gates x H_pad x H_pad) kept on chip for the whole sequence: at 8 warps, 64 per
# thread; exact fp32 dots (CUDA cores) hold more per element, so fp32 stays resident up to H_pad = 64
# (0 spills on sm_80 and sm_90 for every cell, tests/kernels/aot_sweep.py).
RESIDENT_ELEMENTS = 16384
RESIDENT_FP32_MAX_H = 64
BLOCK_B = 16  # batch rows per program (tl.dot's minimum M)
# streamed tiles: hidden units per column tile, reduction chunk; smaller under the interpreter so the
# tests walk several tiles and chunks with small hidden sizes
# by dot tier (and cell where it differs): fp32 operands take twice the registers of fp16/bf16, so
# shorter chunks; 0 spills on sm_80 and sm_90 for every cell (tests/kernels/aot_sweep.py)
STREAMED_CONFIGS = {
    "half": triton.Config({"BLOCK_H": 64, "BLOCK_K": 32}, num_warps=8, num_stages=1),
    "fp32": triton.Config({"BLOCK_H": 64, "BLOCK_K": 16}, num_warps=8, num_stages=1),
    "tf32": triton.Config({"BLOCK_H": 32, "BLOCK_K": 16}, num_warps=4, num_stages=1),
    "tf32-lstm": triton.Config({"BLOCK_H": 32, "BLOCK_K": 16}, num_warps=8, num_stages=1),
    # 64-bit offsets take more registers: fp16/bf16 GRU and LSTM tiles of 64 spill on sm_80, so halve them
    "half-int64": triton.Config({"BLOCK_H": 32, "BLOCK_K": 32}, num_warps=8, num_stages=1),
}
INTERPRET_STREAMED_CONFIG = triton.Config({"BLOCK_H": 16, "BLOCK_K": 16}, num_warps=4, num_stages=1)


@triton.jit
def _cell(a0, a1, a2, a3, h_prev, c_prev, CELL: tl.constexpr, ACT: tl.constexpr):
    """One cell on fp32 tiles. a0..a3: the gates' pre-activations (rnn: a0; lstm: i, f, g, o;
    gru: r, z and n's input part, with a3 = W_hn h + b_hn). Returns (h', c') (c' = c_prev unless lstm)."""
    if CELL == "rnn":
        h = apply_act(a0, ACT, 0.0, 0.0, 0.0)
        c = c_prev
    elif CELL == "lstm":
        c = apply_act(a1, "sigmoid", 0.0, 0.0, 0.0) * c_prev + \
            apply_act(a0, "sigmoid", 0.0, 0.0, 0.0) * apply_act(a2, "tanh", 0.0, 0.0, 0.0)
        h = apply_act(a3, "sigmoid", 0.0, 0.0, 0.0) * apply_act(c, "tanh", 0.0, 0.0, 0.0)
    else:
        r = apply_act(a0, "sigmoid", 0.0, 0.0, 0.0)
        z = apply_act(a1, "sigmoid", 0.0, 0.0, 0.0)
        n = apply_act(a2 + r * a3, "tanh", 0.0, 0.0, 0.0)
        h = (1.0 - z) * n + z * h_prev
        c = c_prev
    return h, c


@triton.jit
def _dot(h, w, acc, DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
    if DOT_UPCAST:
        w = w.to(tl.float32)
    return tl.dot(h, w, acc, input_precision=DOT_PRECISION)


@triton.jit
def recurrence_kernel(
    xg_ptr, sxg_n, sxg_t,       # input projections [N, T, D*G] fp32 (biases folded), row strides (gate stride 1)
    w_ptr,                      # W_hh^T per direction, [D, H, G] contiguous (I/O dtype)
    bn_ptr,                     # GRU's b_hn [D, H] fp32 (read iff HAS_BN)
    h0_ptr, sh0_d, sh0_n,       # initial h [D, N, H] (read iff HAS_H0), direction and row strides
    c0_ptr, sc0_d, sc0_n,       # initial c [D, N, H] (lstm; read iff HAS_C0)
    y_ptr, sy_n, sy_t,          # output sequence [N, T, D*H]: direction d writes columns [d*H, (d+1)*H)
    hn_ptr, shn_d, shn_n,       # final h [D, N, H]
    cn_ptr, scn_d, scn_n,       # final c [D, N, H] (lstm only)
    ws_ptr,                     # fp32 carry [D, N, H] (streamed lstm/gru: c or h), contiguous
    N, T, H,
    CELL: tl.constexpr,         # "rnn", "lstm" or "gru"
    ACT: tl.constexpr,          # rnn's nonlinearity: "tanh" or "relu"
    HAS_H0: tl.constexpr, HAS_C0: tl.constexpr, HAS_BN: tl.constexpr,
    RESIDENT: tl.constexpr,     # W_hh on chip for the whole sequence (H <= BLOCK_H = BLOCK_K)
    DOT_PRECISION: tl.constexpr,  # "ieee" or "tf32" (fp32 inputs only)
    DOT_UPCAST: tl.constexpr,   # feed tl.dot fp32 (works around the interpreter's bf16 dot)
    USE_INT64: tl.constexpr,    # 64-bit offsets
    BLOCK_B: tl.constexpr,      # batch rows per program
    BLOCK_H: tl.constexpr,      # hidden units per column tile (resident: H padded)
    BLOCK_K: tl.constexpr,      # reduction chunk over the previous state (resident: = BLOCK_H)
):
    pid_b = tl.program_id(0)
    d = tl.program_id(1)                  # direction: 0 forward, 1 backward
    if CELL == "lstm":
        G = 4 * H
    elif CELL == "gru":
        G = 3 * H
    else:
        G = H
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < N
    rows = offs_b
    if USE_INT64:
        rows = rows.to(tl.int64)
    dot_ty = tl.float32 if DOT_UPCAST else y_ptr.dtype.element_ty
    xg_rows = xg_ptr + rows[:, None] * sxg_n + d * G   # + t * sxg_t + gate * H + j
    y_rows = y_ptr + rows[:, None] * sy_n + d * H       # + t * sy_t + j
    w_dir = w_ptr + d * H * G                           # + k * G + gate * H + j

    if RESIDENT:
        offs_j = tl.arange(0, BLOCK_H)
        mask_j = offs_j < H
        mask = mask_b[:, None] & mask_j[None, :]
        # -- W_hh: read once, on chip for all T steps: gates x H x H.
        w_ptrs = w_dir + offs_j[:, None] * G + offs_j[None, :]
        w_mask = mask_j[:, None] & mask_j[None, :]
        w0 = tl.load(w_ptrs, mask=w_mask, other=0.0)
        w1 = w0
        w2 = w0
        w3 = w0
        if CELL != "rnn":
            w1 = tl.load(w_ptrs + H, mask=w_mask, other=0.0)
            w2 = tl.load(w_ptrs + 2 * H, mask=w_mask, other=0.0)
        if CELL == "lstm":
            w3 = tl.load(w_ptrs + 3 * H, mask=w_mask, other=0.0)
        bn = tl.zeros((BLOCK_H,), dtype=tl.float32)
        if HAS_BN:
            bn = tl.load(bn_ptr + d * H + offs_j, mask=mask_j, other=0.0)
        # -- the state, fp32 in registers.
        h = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
        c = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
        if HAS_H0:
            h = tl.load(h0_ptr + d * sh0_d + rows[:, None] * sh0_n + offs_j[None, :], mask=mask, other=0.0)
            h = h.to(tl.float32)
        if HAS_C0:
            c = tl.load(c0_ptr + d * sc0_d + rows[:, None] * sc0_n + offs_j[None, :], mask=mask, other=0.0)
            c = c.to(tl.float32)
        for step in range(0, T):
            t = step + d * (T - 1 - 2 * step)      # forward: step; backward: T - 1 - step
            hin = h.to(dot_ty)
            # BLOCK_B x G of xg read, BLOCK_B x H of h_t written: all the traffic of a step.
            xg = xg_rows + t * sxg_t + offs_j[None, :]
            a0 = _dot(hin, w0, tl.load(xg, mask=mask, other=0.0), DOT_PRECISION, DOT_UPCAST)
            a1 = a0
            a2 = a0
            a3 = a0
            if CELL != "rnn":
                a1 = _dot(hin, w1, tl.load(xg + H, mask=mask, other=0.0), DOT_PRECISION, DOT_UPCAST)
            if CELL == "lstm":
                a2 = _dot(hin, w2, tl.load(xg + 2 * H, mask=mask, other=0.0), DOT_PRECISION, DOT_UPCAST)
                a3 = _dot(hin, w3, tl.load(xg + 3 * H, mask=mask, other=0.0), DOT_PRECISION, DOT_UPCAST)
            if CELL == "gru":
                a2 = tl.load(xg + 2 * H, mask=mask, other=0.0)
                a3 = _dot(hin, w2, tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32), DOT_PRECISION, DOT_UPCAST) \
                    + bn[None, :]
            h, c = _cell(a0, a1, a2, a3, h, c, CELL, ACT)
            tl.store(y_rows + t * sy_t + offs_j[None, :], h.to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(hn_ptr + d * shn_d + rows[:, None] * shn_n + offs_j[None, :], h.to(hn_ptr.dtype.element_ty),
                 mask=mask)
        if CELL == "lstm":
            tl.store(cn_ptr + d * scn_d + rows[:, None] * scn_n + offs_j[None, :], c.to(cn_ptr.dtype.element_ty),
                     mask=mask)
    else:
        offs_k = tl.arange(0, BLOCK_K)
        ws_rows = ws_ptr + d * N * H + rows[:, None] * H
        for step in range(0, T):
            t = step + d * (T - 1 - 2 * step)
            t_prev = t - 1 + 2 * d                 # the step before, in this direction's order
            first = step == 0
            for j0 in range(0, H, BLOCK_H):
                offs_j = j0 + tl.arange(0, BLOCK_H)
                mask_j = offs_j < H
                mask = mask_b[:, None] & mask_j[None, :]
                xg = xg_rows + t * sxg_t + offs_j[None, :]
                acc0 = tl.load(xg, mask=mask, other=0.0)
                acc1 = acc0
                acc2 = acc0
                acc3 = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
                if CELL != "rnn":
                    acc1 = tl.load(xg + H, mask=mask, other=0.0)
                if CELL == "lstm":
                    acc2 = tl.load(xg + 2 * H, mask=mask, other=0.0)
                    acc3 = tl.load(xg + 3 * H, mask=mask, other=0.0)
                if CELL == "gru":
                    acc2 = tl.load(xg + 2 * H, mask=mask, other=0.0)
                # -- h_{t-1} @ W_hh^T for this column tile, BLOCK_K units of the previous state at a time:
                #    BLOCK_B x BLOCK_K of h (the output sequence, or h0) and gates x BLOCK_K x BLOCK_H of W.
                for k0 in range(0, H, BLOCK_K):
                    ks = k0 + offs_k
                    mask_k = ks < H
                    hk_mask = mask_b[:, None] & mask_k[None, :]
                    hk = tl.load(y_rows + t_prev * sy_t + ks[None, :], mask=hk_mask & (step > 0), other=0.0)
                    if HAS_H0:
                        hk += tl.load(h0_ptr + d * sh0_d + rows[:, None] * sh0_n + ks[None, :],
                                      mask=hk_mask & first, other=0.0)
                    hk = hk.to(dot_ty)
                    w_ptrs = w_dir + ks[:, None] * G + offs_j[None, :]
                    w_mask = mask_k[:, None] & mask_j[None, :]
                    if CELL == "gru":
                        acc0 = _dot(hk, tl.load(w_ptrs, mask=w_mask, other=0.0), acc0, DOT_PRECISION, DOT_UPCAST)
                        acc1 = _dot(hk, tl.load(w_ptrs + H, mask=w_mask, other=0.0), acc1, DOT_PRECISION,
                                    DOT_UPCAST)
                        acc3 = _dot(hk, tl.load(w_ptrs + 2 * H, mask=w_mask, other=0.0), acc3, DOT_PRECISION,
                                    DOT_UPCAST)
                    else:
                        acc0 = _dot(hk, tl.load(w_ptrs, mask=w_mask, other=0.0), acc0, DOT_PRECISION, DOT_UPCAST)
                        if CELL == "lstm":
                            acc1 = _dot(hk, tl.load(w_ptrs + H, mask=w_mask, other=0.0), acc1, DOT_PRECISION,
                                        DOT_UPCAST)
                            acc2 = _dot(hk, tl.load(w_ptrs + 2 * H, mask=w_mask, other=0.0), acc2, DOT_PRECISION,
                                        DOT_UPCAST)
                            acc3 = _dot(hk, tl.load(w_ptrs + 3 * H, mask=w_mask, other=0.0), acc3, DOT_PRECISION,
                                        DOT_UPCAST)
                if HAS_BN:
                    acc3 += tl.load(bn_ptr + d * H + offs_j, mask=mask_j, other=0.0)[None, :]
                # -- the fp32 carry of these units (c, or the GRU's h): the workspace, or the initial state.
                carry = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
                if CELL != "rnn":
                    carry = tl.load(ws_rows + offs_j[None, :], mask=mask & (step > 0), other=0.0)
                    if CELL == "lstm" and HAS_C0:
                        carry += tl.load(c0_ptr + d * sc0_d + rows[:, None] * sc0_n + offs_j[None, :],
                                         mask=mask & first, other=0.0).to(tl.float32)
                    if CELL == "gru" and HAS_H0:
                        carry += tl.load(h0_ptr + d * sh0_d + rows[:, None] * sh0_n + offs_j[None, :],
                                         mask=mask & first, other=0.0).to(tl.float32)
                h, c = _cell(acc0, acc1, acc2, acc3, carry, carry, CELL, ACT)
                tl.store(y_rows + t * sy_t + offs_j[None, :], h.to(y_ptr.dtype.element_ty), mask=mask)
                if CELL == "lstm":
                    tl.store(ws_rows + offs_j[None, :], c, mask=mask)
                if CELL == "gru":
                    tl.store(ws_rows + offs_j[None, :], h, mask=mask)
                if step == T - 1:
                    tl.store(hn_ptr + d * shn_d + rows[:, None] * shn_n + offs_j[None, :],
                             h.to(hn_ptr.dtype.element_ty), mask=mask)
                    if CELL == "lstm":
                        tl.store(cn_ptr + d * scn_d + rows[:, None] * scn_n + offs_j[None, :],
                                 c.to(cn_ptr.dtype.element_ty), mask=mask)
            # every column of h_t (and the carry) is stored before any thread of the CTA reads them
            tl.debug_barrier()


# --------------------------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PackedLayer:
    """One layer's weights, packed once (both directions): ``w_ih`` [I, D*G] for the projection GEMM,
    ``bias`` [D*G] fp32 (b_ih + b_hh; GRU: b_hh of r and z only) or None, ``w_hh`` [D, H, G] (W_hh^T per
    direction), ``b_hn`` [D, H] fp32 (GRU with bias) or None."""
    cell: str
    hidden_size: int
    w_ih: torch.Tensor
    bias: Optional[torch.Tensor]
    w_hh: torch.Tensor
    b_hn: Optional[torch.Tensor]

    @property
    def directions(self) -> int:
        return self.w_hh.shape[0]


def pack_layer(cell: str, w_ih, w_hh, b_ih=None, b_hh=None) -> PackedLayer:
    """Pack one layer from torch's tensors, one list entry per direction: ``w_ih`` [G, I], ``w_hh``
    [G, H], ``b_ih`` / ``b_hh`` [G] (lists of None without bias). Weights keep their dtype (the compute
    dtype); biases are summed in fp32."""
    if cell not in CELLS:
        raise KernelError(f"unknown cell {cell!r}; expected one of {tuple(CELLS)}")
    dirs = len(w_ih)
    if dirs not in (1, 2) or len(w_hh) != dirs:
        raise KernelError(f"one or two directions of weights, got {len(w_ih)} w_ih and {len(w_hh)} w_hh")
    G, H = w_hh[0].shape
    if G != CELLS[cell] * H:
        raise KernelError(f"{cell} w_hh must be [{CELLS[cell]} * H, H], got {tuple(w_hh[0].shape)}")
    for w in (*w_ih, *w_hh):
        check_io_dtype(w, "weight")
    if any(w.shape[0] != G for w in w_ih) or any(tuple(w.shape) != (G, H) for w in w_hh):
        raise KernelError(f"w_ih must be [{G}, I] and w_hh [{G}, {H}] for every direction")
    w_ih_packed = matmul.pack_linear_weight(torch.cat(list(w_ih), 0))
    w_hh_packed = torch.stack([w.t() for w in w_hh]).contiguous()
    bias = b_hn = None
    b_ih = list(b_ih) if b_ih is not None else [None] * dirs
    b_hh = list(b_hh) if b_hh is not None else [None] * dirs
    if any(b is not None for b in b_ih + b_hh):
        zero = torch.zeros(G, dtype=torch.float32, device=w_hh[0].device)
        parts, hn = [], []
        for bi, bh in zip(b_ih, b_hh):
            bi = zero if bi is None else bi.float()
            bh = zero if bh is None else bh.float()
            if cell == "gru":  # b_hn is multiplied by r: it stays with W_hn h
                parts.append(bi + torch.cat([bh[:2 * H], zero[:H]]))
                hn.append(bh[2 * H:])
            else:
                parts.append(bi + bh)
        bias = torch.cat(parts).contiguous()
        b_hn = torch.stack(hn).contiguous() if hn else None
    return PackedLayer(cell, H, w_ih_packed, bias, w_hh_packed, b_hn)


def is_resident(cell: str, hidden_size: int, dtype: torch.dtype) -> bool:
    """Whether the recurrence keeps W_hh on chip for the whole sequence (see RESIDENT_ELEMENTS)."""
    padded = max(16, triton.next_power_of_2(hidden_size))
    return CELLS[cell] * padded * padded <= RESIDENT_ELEMENTS and (dtype != torch.float32
                                                                    or padded <= RESIDENT_FP32_MAX_H)


def _check_state(t, name, shape, dtype):
    if t is None:
        return
    check_io_dtype(t, name)
    if tuple(t.shape) != shape:
        raise KernelError(f"{name} must be {shape} ([directions, N, H]), got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise KernelError(f"{name} must have the sequence's dtype {dtype}, got {t.dtype}")
    if shape[2] > 1 and t.stride(2) != 1:
        raise KernelError(f"{name}: the last dim must have stride 1, got strides {tuple(t.stride())}")


def _plan_recurrence(xg, w_hh, cell, act, b_hn, h0, c0, out, h_n, c_n, resident, allow_tf32, interpret):
    if cell not in CELLS:
        raise KernelError(f"unknown cell {cell!r}; expected one of {tuple(CELLS)}")
    if act not in ("tanh", "relu"):
        raise KernelError(f"the nonlinearity must be tanh or relu, got {act!r}")
    check_io_dtype(w_hh, "w_hh")
    if w_hh.dim() != 3 or not w_hh.is_contiguous():
        raise KernelError(f"w_hh must be a contiguous [D, H, G] (use pack_layer), got {tuple(w_hh.shape)}")
    D, H, G = w_hh.shape
    if D not in (1, 2) or G != CELLS[cell] * H:
        raise KernelError(f"{cell}: w_hh must be [D in (1, 2), H, {CELLS[cell]} * H], got {tuple(w_hh.shape)}")
    if xg.dtype != torch.float32 or xg.dim() != 3 or xg.shape[2] != D * G or xg.stride(2) != 1:
        raise KernelError(f"xg must be fp32 [N, T, {D * G}] with gate stride 1, got {xg.dtype} {tuple(xg.shape)}")
    N, T = xg.shape[:2]
    dtype = w_hh.dtype
    if out is None:
        out = torch.empty((N, T, D * H), dtype=dtype, device=xg.device)
    if out.dtype != dtype or tuple(out.shape) != (N, T, D * H) or out.stride(2) != 1:
        raise KernelError(f"out must be {dtype} [N, T, {D * H}] with feature stride 1, got {out.dtype} "
                          f"{tuple(out.shape)} strides {tuple(out.stride())}")
    state = (D, N, H)
    if h_n is None:
        h_n = torch.empty(state, dtype=dtype, device=xg.device)
    if cell == "lstm" and c_n is None:
        c_n = torch.empty(state, dtype=dtype, device=xg.device)
    for t, name in ((h0, "h0"), (c0, "c0"), (h_n, "h_n"), (c_n, "c_n")):
        _check_state(t, name, state, dtype)
    if c0 is not None and cell != "lstm":
        raise KernelError(f"only an lstm takes c0, not a {cell}")
    if b_hn is not None and (cell != "gru" or tuple(b_hn.shape) != (D, H) or b_hn.dtype != torch.float32):
        raise KernelError(f"b_hn is a GRU's fp32 [D={D}, H={H}] hidden bias of n, got {tuple(b_hn.shape)} for a {cell}")

    padded = max(16, triton.next_power_of_2(H))
    if resident is None:
        resident = is_resident(cell, H, dtype)
    if resident:
        cfg = triton.Config({"BLOCK_H": padded, "BLOCK_K": padded}, num_warps=8 if padded >= 64 else 4,
                            num_stages=1)
    else:
        tier = "half" if dtype != torch.float32 else ("tf32" if allow_tf32 else "fp32")
        if tier == "half" and needs_int64(xg, out, h0, c0, h_n, c_n) and cell != "rnn":
            tier = "half-int64"
        cfg = INTERPRET_STREAMED_CONFIG if interpret else STREAMED_CONFIGS.get(f"{tier}-{cell}",
                                                                                STREAMED_CONFIGS[tier])
    carry = None
    if not resident and cell != "rnn":
        carry = torch.empty(state, dtype=torch.float32, device=xg.device)
    dummy = out
    hn_view = h_n
    cn_view = c_n if c_n is not None else h_n

    def strides(t):
        return (t.stride(0), t.stride(1)) if t is not None else (0, 0)

    args = dict(xg_ptr=xg, sxg_n=xg.stride(0), sxg_t=xg.stride(1), w_ptr=w_hh,
                bn_ptr=b_hn if b_hn is not None else xg,
                h0_ptr=h0 if h0 is not None else dummy, sh0_d=strides(h0)[0], sh0_n=strides(h0)[1],
                c0_ptr=c0 if c0 is not None else dummy, sc0_d=strides(c0)[0], sc0_n=strides(c0)[1],
                y_ptr=out, sy_n=out.stride(0), sy_t=out.stride(1),
                hn_ptr=hn_view, shn_d=hn_view.stride(0), shn_n=hn_view.stride(1),
                cn_ptr=cn_view, scn_d=cn_view.stride(0), scn_n=cn_view.stride(1),
                ws_ptr=carry if carry is not None else xg, N=N, T=T, H=H)
    constexprs = dict(CELL=cell, ACT=act, HAS_H0=h0 is not None, HAS_C0=c0 is not None, HAS_BN=b_hn is not None,
                      RESIDENT=bool(resident),
                      DOT_PRECISION="tf32" if (dtype == torch.float32 and allow_tf32) else "ieee",
                      DOT_UPCAST=interpret and dtype == torch.bfloat16,
                      USE_INT64=needs_int64(xg, out, h0, c0, h_n, c_n, carry), BLOCK_B=BLOCK_B)
    grid = lambda meta: (triton.cdiv(N, BLOCK_B), D)
    launch = Launch(recurrence_kernel, None, args, constexprs, grid, cfg)
    return (out, h_n, c_n), (launch if N > 0 else None)


def recurrence(xg, w_hh, cell, *, act="tanh", b_hn=None, h0=None, c0=None, out=None, h_n=None, c_n=None,
               resident=None, allow_tf32=False):
    """The recurrence of one layer, both directions in one launch, given its input projections.

    xg         : fp32 [N, T, D*G], x @ W_ih^T + biases for every step (gate stride 1)
    w_hh       : [D, H, G] W_hh^T per direction (:func:`pack_layer`), fp32/fp16/bf16: the I/O dtype
    cell       : "rnn" (act "tanh" or "relu"), "lstm" or "gru" (b_hn: [D, H] fp32, its hidden bias of n)
    h0, c0     : optional initial states [D, N, H] (c0: lstm only), any strides with the last dim contiguous
    out        : optional output sequence [N, T, D*H] (feature stride 1: may be a column slice)
    h_n, c_n   : optional final states [D, N, H] (e.g. a slice of [layers*D, N, H])
    resident   : force (True) or forbid (False) keeping W_hh on chip; None: by size
    Returns (out, h_n, c_n) (c_n None unless lstm).
    """
    result, launch = _plan_recurrence(xg, w_hh, cell, act, b_hn, h0, c0, out, h_n, c_n, resident, allow_tf32,
                                      interpreting())
    if launch is not None:
        run(launch)
    return result


def _plan_projection(x, layer: PackedLayer, xg, allow_tf32, interpret):
    N, T, _ = x.shape
    if xg is None:
        xg = torch.empty((N, T, layer.w_ih.shape[1]), dtype=torch.float32, device=x.device)
    return matmul._plan_linear(x, layer.w_ih, Epilogue(bias=layer.bias), xg, allow_tf32, interpret)


def recurrent_layer(x, layer: PackedLayer, *, act="tanh", h0=None, c0=None, out=None, h_n=None, c_n=None,
                    resident=None, allow_tf32=False):
    """One layer of torch's nn.RNN / nn.LSTM / nn.GRU (batch first): two launches, the projection GEMM
    (every step, both directions) and the recurrence.

    x          : [N, T, I] (rows uniformly strided, last dim contiguous), the weights' dtype
    layer      : :func:`pack_layer`'s result
    h0, c0, out, h_n, c_n, resident, allow_tf32: as :func:`recurrence`
    Returns (out [N, T, D*H], h_n [D, N, H], c_n [D, N, H] or None).
    """
    check_io_dtype(x, "x")
    if x.dim() != 3:
        raise KernelError(f"x must be [N, T, I] (batch first), got {tuple(x.shape)}")
    if x.dtype != layer.w_hh.dtype:
        raise KernelError(f"x ({x.dtype}) and the weights ({layer.w_hh.dtype}) must share a dtype")
    xg, launch = _plan_projection(x, layer, None, allow_tf32, interpreting())
    if x.numel() > 0:
        run(launch)
    return recurrence(xg, layer.w_hh, layer.cell, act=act, b_hn=layer.b_hn, h0=h0, c0=c0, out=out, h_n=h_n,
                      c_n=c_n, resident=resident, allow_tf32=allow_tf32)


def specialization(cell, batch, steps, input_size, hidden_size, dtype, *, act="tanh", bidirectional=False,
                   bias=True, initial_state=False, resident=None, allow_tf32=False) -> list:
    """AOT specializations of :func:`recurrent_layer` for x [batch, steps, input_size]: the projection GEMM
    (its default config) and the recurrence kernel."""
    D, G, H = 1 + bool(bidirectional), CELLS[cell] * hidden_size, hidden_size
    x = meta_tensor((batch, steps, input_size), dtype)
    layer = PackedLayer(cell, H, meta_tensor((input_size, D * G), dtype),
                        meta_tensor((D * G,), torch.float32) if bias else None, meta_tensor((D, H, G), dtype),
                        meta_tensor((D, H), torch.float32) if bias and cell == "gru" else None)
    xg, projection = _plan_projection(x, layer, None, allow_tf32, False)
    state = meta_tensor((D, batch, H), dtype) if initial_state else None
    _, launch = _plan_recurrence(xg, layer.w_hh, cell, act, layer.b_hn, state,
                                 state if cell == "lstm" else None, None, None, None, resident, allow_tf32, False)
    return [spec_of(projection), spec_of(launch)]
