"""Passes: pure ``Graph -> Graph`` rewrites and analyses, composed into named pipelines.

    from netdsl.passes import run_pipeline
    fused = run_pipeline(graph, "O1", log=print)     # O0: nothing; O1: every pass below

O1 = remove_dropout, cse, dce                       (cleanup.py)
   + fold_batchnorm, fuse_attention, fuse_norm_activation,
     fuse_conv_epilogue, fuse_pointwise             (fusion.py: RULES; the fused ops are netdsl/ops/fused.py)
   + mark_layout, plan_memory                       (layout.py, memory.py: analyses, stored on the graph)
The cost model and report (FLOPs, bytes, launches; unfused / fused / ideal) is cost.py.
See docs/passes.md.
"""

from .manager import PASSES, PIPELINES, Pass, format_annotated, pipeline_passes, run_pipeline

__all__ = ["PASSES", "PIPELINES", "Pass", "format_annotated", "pipeline_passes", "run_pipeline"]
