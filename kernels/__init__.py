"""Triton kernels for netdsl (imported as ``netdsl.kernels``). They never import the compiler.

One module per kernel family, each read like a Triton tutorial (what and why, configs,
the ``@triton.jit`` kernel, the host wrapper, the AOT ``specialization``):

* ``conv``        conv2d as an implicit GEMM over NHWC (``pack_conv_weight``, ``conv2d``)
* ``conv_direct`` depthwise conv2d as a direct kernel (``depthwise_conv2d``)
* ``matmul``      linear layers (``pack_linear_weight``, ``linear``)
* ``norm``        ``layernorm``, ``groupnorm``, batchnorm as ``channel_affine``
* ``pool``        ``maxpool2d``, ``avgpool2d``, ``global_avgpool``
* ``softmax``     ``softmax``, ``log_softmax``
* ``pointwise``   fused elementwise chains (``pointwise``, ``channel_affine``, ``add``, ``mul``)
* ``activations`` the one activation table; ``epilogue`` the fused bias/act/residual tail
* ``aot``         ahead-of-time builds for sm_80/sm_90 without a GPU (``build_many``)

This package imports nothing eagerly: AOT worker processes import ``netdsl.kernels.aot``
and must set up their environment before anything imports triton.
"""
