#!/usr/bin/env bash
# Set up a virtual environment with everything netdsl needs, then (unless --no-demo) run the main job:
# compile an example, run it on the reference backend and compare it with PyTorch.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an open range would pull a multi-GB CUDA build on a CPU-only machine.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[triton,test,onnx]"
if [ "${1:-}" != "--no-demo" ]; then
    echo "== ResNet-18: the fused IR's cost (netdsl show --pipeline O1 --cost)"
    netdsl show examples/resnet18.net --pipeline O1 --cost --dims N=1,H=224,W=224 | tail -n 5
    echo "== ResNet-18 on the reference backend (NumPy)"
    netdsl run examples/resnet18.net --dims N=2,H=224,W=224
    echo "== LeNet-5 compiled to Triton kernels, checked node by node against the reference"
    echo "   (no GPU here: the kernels run in Triton's interpreter, slowly)"
    NETDSL_QUIET_INTERPRETER=1 netdsl check examples/lenet5.net --dims N=2 --random-weights --dtype fp16
fi
