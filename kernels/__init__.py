"""Triton kernels for netdsl (imported as ``netdsl.kernels``). They never import the compiler."""
