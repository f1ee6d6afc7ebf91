"""netdsl: a declarative language for neural networks and a compiler to fused Triton kernels."""
