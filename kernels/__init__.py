"""Triton kernels for netdsl (imported as ``netdsl.kernels``). They never import the compiler.

One module per kernel family, each read like a Triton tutorial (what and why, configs,
the ``@triton.jit`` kernel, the host wrapper, the AOT ``specialization``):

* ``conv``        conv2d as an implicit GEMM over NHWC (``pack_conv_weight``, ``conv2d``)
* ``conv_direct`` depthwise conv2d as a direct kernel (``depthwise_conv2d``)
* ``conv_transpose`` conv_transpose2d as a per-phase (sub-pixel) implicit GEMM
                  (``pack_conv_transpose_weight``, ``conv_transpose2d``)
* ``conv_common`` host checks and geometry shared by the convolutions (``check_conv_args``,
                  ``conv_output_size``, ``is_depthwise``, ``dot_tier``)
* ``matmul``      linear layers (``pack_linear_weight``, ``linear``; ``tma=True``: TMA descriptors, sm_90)
* ``splitk``      split-K for grids shorter than the SMs: ``choose_split`` (a pure function of shape,
                  configs and SM count) and the in-order reduction that applies the epilogue
* ``bmm``         batched matmul of two activations, any strides (``bmm``: a transpose is free)
* ``attention``   FlashAttention-style scaled dot-product attention, forward (``attention``:
                  causal, boolean/additive masks; the [L, S] scores never reach memory)
* ``embedding``   row gather (``embedding``; ids outside [0, V) give zero rows and are counted)
* ``norm``        ``layernorm``, ``groupnorm``, batchnorm as ``channel_affine``
* ``pool``        ``maxpool2d``, ``avgpool2d``, ``global_avgpool``, ``global_maxpool``
* ``upsample``    ``upsample_nearest2d``, ``upsample_bilinear2d`` (torch's interpolate)
* ``softmax``     ``softmax``, ``log_softmax``
* ``pointwise``   fused elementwise chains (``pointwise``, ``channel_affine``, ``add``, ``mul``)
* ``activations`` the one activation table (incl. ``affine``: alpha * x + beta); ``epilogue``
                  the fused bias/act/residual tail
                  (``Epilogue``; ``Epilogue.planned`` for AOT plans from shapes)
* ``_host``       launch plans, row views, and ``KernelError``: what every wrapper raises
                  for bad arguments (a ValueError, and a TypeError for dtypes)
* ``aot``         ahead-of-time builds for sm_80/sm_90 without a GPU (``build_many``)

This package imports nothing eagerly: AOT worker processes import ``netdsl.kernels.aot``
and must set up their environment before anything imports triton.
"""
