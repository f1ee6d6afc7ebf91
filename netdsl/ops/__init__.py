"""The op registry. Importing this package registers every op."""

from . import activations, nn, pooling  # noqa: F401  (registration side effects)
from . import resample  # noqa: F401  (conv_transpose2d, upsample)
from . import tensor  # noqa: F401  (matmul, reshape, transpose, permute, (un)squeeze)
from . import sequence  # noqa: F401  (embedding, positional_encoding, scaled_dot_product_attention)
from . import slicing  # noqa: F401  (slice, select: basic indexing along one dim)
from . import structure  # noqa: F401  (split, chunk: several results; unflatten, expand; parameter)
from . import recurrent  # noqa: F401  (rnn, lstm, gru: several results)
from . import fused  # noqa: F401  (fused ops, produced by netdsl.passes; after nn and activations)
from .registry import ALIASES, REGISTRY, Attr, OpDef, OpKind, ShapeError, lookup

__all__ = ["REGISTRY", "ALIASES", "Attr", "OpDef", "OpKind", "ShapeError", "lookup"]
