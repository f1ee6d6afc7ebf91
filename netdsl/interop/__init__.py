"""Interchange with other tools: ONNX export (``onnx_export``) and import (``onnx_import``).

Neither module imports ``onnx`` at import time, so the CLI starts without it; the ``onnx`` extra
(``pip install netdsl[onnx]``) installs what they need.
"""
