"""netdsl's standard library of blocks, written in .net (``import transformer`` in a model file)."""
