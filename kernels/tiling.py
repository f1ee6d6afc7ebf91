"""Device helpers for how kernels walk their tiles, shared by conv, depthwise conv, matmul and pooling."""

import triton
import triton.language as tl


@triton.jit
def grouped_tile(pid, num_m, num_n, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program ``pid`` in grouped order: GROUP_M row tiles sweep the column tiles
    together, so consecutive programs share weight columns in L2."""
    group_size = GROUP_M * num_n
    first_m = (pid // group_size) * GROUP_M
    rows_in_group = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows_in_group
    pid_n = (pid % group_size) // rows_in_group
    return pid_m, pid_n



@triton.jit
def window_origin(offs_m, OH, OW, stride_h, stride_w, pad_h, pad_w, USE_INT64: tl.constexpr):
    """For output rows ``offs_m`` (pixels (n, oh, ow) of an [N, OH, OW] map): the sample n and the
    top-left input tap (ih0, iw0) of each row's window, which may lie in the padding."""
    pix = OH * OW
    n = offs_m // pix
    rem = offs_m - n * pix
    oh = rem // OW
    ow = rem - oh * OW
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    if USE_INT64:
        n = n.to(tl.int64)
        ih0 = ih0.to(tl.int64)
        iw0 = iw0.to(tl.int64)
    return n, ih0, iw0
