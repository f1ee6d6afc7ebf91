"""`netdsl import model.onnx -o model.net`: the written .net file and weights, run on netdsl's reference
backend, give onnxruntime's outputs for the same ONNX model.

Models come from PyTorch's exporter (small torch modules, and the twins of the example models) and from
onnx.helper (one op each, for the meaning of its attributes). Every check loads the files the command
wrote (the weights strictly) and compares with onnxruntime, an independent implementation of ONNX.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from netdsl.backends import reference  # noqa: E402
from netdsl.cli import main  # noqa: E402
from netdsl.errors import NetDSLError  # noqa: E402
from netdsl.frontend import load  # noqa: E402
from netdsl.interop.onnx_import import import_onnx  # noqa: E402
from netdsl.params import load_weights, random_weights  # noqa: E402
from netdsl.tolerances import TOLERANCES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from twins import TWINS, Weights  # noqa: E402

nn = torch.nn
RNG = np.random.default_rng(0)


# --- helpers ------------------------------------------------------------------------------------------

def onnxruntime(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})


def import_and_compare(tmp_path: Path, model: Path, inputs: list[np.ndarray]) -> str:
    """`netdsl import` the model, run the written files on the reference backend and compare every output
    with onnxruntime's; return the .net text."""
    net = tmp_path / "imported.net"
    assert main(["import", str(model), "-o", str(net)]) == 0
    graph = load(net)
    weights = load_weights(net.with_suffix(".safetensors"), graph)  # strict: every tensor, no extra one
    ours = list(reference.run(graph, inputs, weights, "f32").values())
    theirs = onnxruntime(model, inputs)
    assert len(ours) == len(theirs)
    for got, want in zip(ours, theirs):
        abs_err, rel_err, ok = TOLERANCES["f32"].error(got, want)
        assert ok, f"max abs error {abs_err:.3g} (relative {rel_err:.3g}) against onnxruntime\n{net.read_text()}"
    return net.read_text()


def export(module: nn.Module, shapes: list[tuple[int, ...]], path: Path, opset: int = 17, **kwargs) -> Path:
    """The module exported by PyTorch's (TorchScript) exporter, the batch dim dynamic (named N) unless told."""
    names = [f"x{i}" for i in range(len(shapes))] if len(shapes) > 1 else ["x"]
    kwargs.setdefault("dynamic_axes", {n: {0: "N"} for n in names})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), tuple(torch.randn(*s) for s in shapes), str(path), dynamo=False,
                          opset_version=opset, input_names=names, **kwargs)
    return path


def randomize(module: nn.Module) -> nn.Module:
    """Batchnorm statistics and affine parameters away from their identity defaults (which hide bugs)."""
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module


def batch(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# --- models from PyTorch ------------------------------------------------------------------------------

class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c3 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.f5, self.f6, self.out = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.avg_pool2d(torch.tanh(self.c1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.c3(x)), 2)
        x = x.view(x.size(0), -1)  # Shape -> Gather -> Concat -> Reshape: folded to reshape(N, -1)
        return self.out(torch.tanh(self.f6(torch.tanh(self.f5(x)))))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.downsample = None if stride == 1 and c_in == c else nn.Sequential(
            nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(BasicBlock(4, 4, 1), BasicBlock(4, 8, 2))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layer1(x), 1), 1))


class InvertedResidual(nn.Module):  # MobileNetV2: expand 1x1, depthwise 3x3, project 1x1, residual
    def __init__(self, c=8, t=3):
        super().__init__()
        h = c * t
        self.conv = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.conv(x)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(12, 16), nn.LayerNorm(16), nn.Linear(16, 5)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        h = self.drop(nn.functional.gelu(self.norm(self.fc1(x)), approximate="tanh"))
        return torch.softmax(self.fc2(h), dim=-1), nn.functional.silu(h) - 0.5 * h


def test_lenet(tmp_path):
    model = export(LeNet(), [(1, 1, 32, 32)], tmp_path / "lenet.onnx")
    text = import_and_compare(tmp_path, model, [batch(3, 1, 32, 32)])  # N=3: the batch dim stays symbolic
    assert "input x: f32[N, 1, 32, 32]" in text
    assert "reshape(N, -1)" in text
    assert text.count(" = ") == 1  # one chain: every value has one reader


def test_resnet_blocks_with_batchnorm_keep_pytorch_names(tmp_path):
    module = randomize(ResNetish())
    model = export(module, [(1, 4, 8, 8)], tmp_path / "res.onnx", training=torch.onnx.TrainingMode.PRESERVE)
    text = import_and_compare(tmp_path, model, [batch(2, 4, 8, 8)])
    assert "layer1_0_bn1: batchnorm" in text and "layer1_1_downsample_1: batchnorm" in text
    weights = load_weights(tmp_path / "imported.safetensors", load(tmp_path / "imported.net"))
    state = module.state_dict()
    for key, ours in [("layer1.0.bn1.running_var", "layer1_0_bn1.running_var"),
                      ("layer1.1.conv2.weight", "layer1_1_conv2.weight"), ("fc.bias", "fc.bias")]:
        np.testing.assert_array_equal(weights[ours], state[key].numpy())


def test_resnet_blocks_with_batchnorm_folded_by_the_exporter(tmp_path):
    model = export(randomize(ResNetish()), [(1, 4, 8, 8)], tmp_path / "res.onnx")
    text = import_and_compare(tmp_path, model, [batch(2, 4, 8, 8)])
    assert "batchnorm" not in text and "layer1_0_conv1: conv2d(4, 3, padding=1)" in text


def test_mobilenet_v2_inverted_residual(tmp_path):
    model = export(randomize(InvertedResidual()), [(1, 8, 6, 6)], tmp_path / "mb.onnx",
                   training=torch.onnx.TrainingMode.PRESERVE)
    text = import_and_compare(tmp_path, model, [batch(2, 8, 6, 6)])
    assert "groups=24" in text and "relu6" in text


def test_mlp_on_sequences(tmp_path):
    """A linear on a 3-D input is MatMul + Add in ONNX: one linear with a bias here."""
    model = export(MLP(), [(1, 7, 12)], tmp_path / "mlp.onnx", opset=20)
    text = import_and_compare(tmp_path, model, [batch(2, 7, 12)])
    assert "fc1: linear(16)" in text and 'gelu(approximate="tanh")' in text and "layernorm" in text


class GeluAndMean(nn.Module):
    """Before opset 20 PyTorch writes GELU with Erf (two ways, as F.gelu and as written out by hand); a
    spatial mean is ReduceMean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)

    def forward(self, x):
        h = nn.functional.gelu(self.conv(x))
        h = h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))
        return h.mean((2, 3)), h.mean((-1, -2), keepdim=True)


@pytest.mark.parametrize("opset", [17, 18])
def test_gelu_written_with_erf_and_spatial_means(tmp_path, opset):
    model = export(GeluAndMean(), [(1, 3, 6, 6)], tmp_path / "gelu.onnx", opset=opset)
    text = import_and_compare(tmp_path, model, [batch(2, 3, 6, 6)])
    assert text.count("-> gelu") == 2 and text.count("global_avgpool") == 2 and "erf" not in text.lower()


class Attention(nn.Module):
    """Self-attention written out: chunk (Slice with bounds computed from sizes), head split (Reshape of
    sizes read with Shape), MatMul of two tensors, a scale and Softmax."""

    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = (h.reshape(n, t, 4, 4).transpose(1, 2) for h in self.qkv(x).chunk(3, -1))
        a = torch.softmax(q @ k.transpose(-2, -1) * 0.5, -1) @ v
        return self.proj(a.transpose(1, 2).reshape(n, t, d))


def test_attention(tmp_path):
    model = export(Attention(), [(2, 5, 16)], tmp_path / "attn.onnx",
                   dynamic_axes={"x": {0: "N", 1: "T"}})
    text = import_and_compare(tmp_path, model, [batch(3, 7, 16)])
    assert "input x: f32[N, T, 16]" in text and "slice(-1, start=16, end=32)" in text and "reshape(N, T, 4, 4)" in text


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok, self.head = nn.Embedding(11, 6), nn.Linear(6, 3)

    def forward(self, ids):
        return self.head(self.tok(ids)[:, 0])  # Gather of a constant table by ids, then of one position


def test_embedding_and_select(tmp_path):
    path = tmp_path / "tok.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tokens().eval(), (torch.zeros(2, 4, dtype=torch.long),), str(path), dynamo=False,
                          opset_version=17, input_names=["ids"], dynamic_axes={"ids": {0: "N"}})
    ids = RNG.integers(0, 11, (3, 4)).astype(np.int64)
    text = import_and_compare(tmp_path, path, [ids])
    assert "input ids: i64[N, 4]" in text and "tok: embedding(11, 6)" in text and "select(1, 0)" in text


@pytest.mark.parametrize("up", [nn.Upsample(scale_factor=2), nn.Upsample(scale_factor=(2, 3), mode="bilinear"),
                                nn.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
                                nn.Upsample(size=(9, 5))], ids=["nearest", "bilinear", "align_corners", "size"])
def test_upsample(tmp_path, up):
    model = export(nn.Sequential(nn.Conv2d(2, 3, 1), up), [(1, 2, 4, 3)], tmp_path / "up.onnx", opset=17)
    assert "upsample(" in import_and_compare(tmp_path, model, [batch(2, 2, 4, 3)])


@pytest.mark.parametrize("name, shape", [("lenet5", (1, 1, 32, 32)), ("resnet18", (1, 3, 32, 32)),
                                          ("mobilenet_v2", (1, 3, 32, 32))])
def test_twins_of_the_examples(tmp_path, name, shape):
    """The PyTorch twins of the example models, exported with random weights (as constants)."""
    weights = Weights(random_weights(load(ROOT / "examples" / f"{name}.net")), torch.float32)

    class Twin(nn.Module):
        def forward(self, x):
            return TWINS[name](weights, x)

    model = export(Twin(), [shape], tmp_path / f"{name}.onnx")
    import_and_compare(tmp_path, model, [batch(2, *shape[1:])])


# --- one op at a time, from onnx.helper -----------------------------------------------------------------

def save(model, path: Path) -> Path:
    """Save ``model`` with its outputs' types filled in by ONNX's shape inference (the checker wants them)."""
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
    return path


def single_node(tmp_path: Path, op: str, shape: tuple, consts: dict, attrs: dict, extra_inputs=(), opset=17,
                outputs=1) -> Path:
    """A model of one node: input `x` (batch dim N), constants as initializers, attributes as given."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape[1:]])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *s[1:]]) for n, s in extra_inputs]
    names = ["x", *(n for n, _ in extra_inputs), *consts]
    node = helper.make_node(op, names, [f"y{i}" for i in range(outputs)], name=f"the_{op.lower()}", **attrs)
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(outputs)]
    graph = helper.make_graph([node], "single", inputs, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return save(model, tmp_path / f"{op.lower()}.onnx")


def w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.5).astype(np.float32)


CASES = {  # name: (op, input shape, constants (in input order), attributes)
    "conv_stride_dilation": ("Conv", (2, 4, 11, 9), {"W": w(6, 4, 3, 2), "B": w(6)},
                             dict(strides=[2, 1], dilations=[1, 2], pads=[1, 0, 1, 0])),
    "conv_groups_no_bias": ("Conv", (2, 4, 7, 7), {"W": w(8, 2, 3, 3)}, dict(group=2, pads=[1, 1, 1, 1])),
    "conv_same_upper": ("Conv", (2, 3, 7, 7), {"W": w(5, 3, 3, 3)}, dict(auto_pad="SAME_UPPER")),
    "conv_transpose": ("ConvTranspose", (2, 4, 5, 5), {"W": w(4, 3, 3, 3), "B": w(3)},
                       dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    "gemm_transB_alpha_beta": ("Gemm", (3, 6), {"B": w(4, 6), "C": w(4)}, dict(transB=1, alpha=0.5, beta=2.0)),
    "gemm_plain": ("Gemm", (3, 6), {"B": w(6, 4), "C": w(1, 4)}, {}),
    "matmul_weight": ("MatMul", (2, 3, 6), {"B": w(6, 5)}, {}),
    "batchnorm_eps": ("BatchNormalization", (2, 3, 4, 4),
                      {"s": w(3), "b": w(3), "m": w(3), "v": np.abs(w(3)) + 0.5}, dict(epsilon=1e-3)),
    "layernorm_two_dims": ("LayerNormalization", (2, 3, 4, 5), {"s": w(4, 5), "b": w(4, 5)},
                           dict(axis=2, epsilon=1e-4)),
    "layernorm_no_bias": ("LayerNormalization", (2, 3, 6), {"s": w(6)}, {}),
    "prelu_per_channel": ("PRelu", (2, 3, 4, 4), {"slope": np.abs(w(3, 1, 1))}, {}),
    "maxpool_pads_ceil": ("MaxPool", (2, 3, 9, 8), {}, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                                             ceil_mode=1)),
    "maxpool_ceil_window_in_padding": ("MaxPool", (2, 3, 7, 7), {}, dict(kernel_shape=[2, 2], strides=[2, 2],
                                                                          pads=[1, 1, 1, 1], ceil_mode=1)),
    "maxpool_dilation": ("MaxPool", (2, 3, 9, 9), {}, dict(kernel_shape=[2, 2], dilations=[2, 2])),
    "avgpool_exclude_pad": ("AveragePool", (2, 3, 7, 7), {}, dict(kernel_shape=[3, 3], strides=[2, 2],
                                                                  pads=[1, 1, 1, 1])),
    "avgpool_include_pad": ("AveragePool", (2, 3, 7, 7), {}, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                                                  count_include_pad=1, strides=[1, 1])),
    "avgpool_ceil": ("AveragePool", (2, 3, 8, 8), {}, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "avgpool_ceil_include_pad": ("AveragePool", (2, 3, 8, 8), {}, dict(kernel_shape=[3, 3], strides=[2, 2],
                                                                       pads=[1, 1, 1, 1], ceil_mode=1,
                                                                       count_include_pad=1)),
    "conv_asymmetric_pads": ("Conv", (2, 4, 9, 8), {"W": w(5, 4, 3, 3), "B": w(5)},
                             dict(strides=[2, 1], pads=[0, 1, 2, 0])),
    "conv_depthwise_asymmetric": ("Conv", (2, 4, 9, 8), {"W": w(4, 1, 3, 3)}, dict(group=4, pads=[2, 0, 1, 2])),
    "conv_same_upper_even_stride": ("Conv", (2, 3, 9, 8), {"W": w(4, 3, 4, 4)},
                                    dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "conv_same_lower": ("Conv", (2, 3, 7, 8), {"W": w(4, 3, 2, 3), "B": w(4)}, dict(auto_pad="SAME_LOWER")),
    "conv_same_lower_stride": ("Conv", (2, 3, 9, 8), {"W": w(4, 3, 4, 2)},
                               dict(auto_pad="SAME_LOWER", strides=[2, 3])),
    "maxpool_asymmetric_big_pads": ("MaxPool", (2, 3, 9, 8), {}, dict(kernel_shape=[3, 3], strides=[2, 2],
                                                                      pads=[2, 0, 1, 2])),
    "maxpool_asymmetric_ceil": ("MaxPool", (2, 3, 4, 5), {}, dict(kernel_shape=[2, 2], strides=[2, 2],
                                                                  pads=[0, 1, 1, 1], ceil_mode=1)),
    "maxpool_window_in_padding": ("MaxPool", (2, 3, 1, 3), {}, dict(kernel_shape=[2, 1], dilations=[2, 1],
                                                                    pads=[1, 0, 1, 0])),
    "maxpool_same_upper": ("MaxPool", (2, 3, 7, 10), {}, dict(kernel_shape=[2, 3], strides=[2, 2],
                                                              auto_pad="SAME_UPPER")),
    "avgpool_asymmetric_exclude_pad": ("AveragePool", (2, 3, 9, 8), {}, dict(kernel_shape=[3, 3], strides=[2, 2],
                                                                             pads=[2, 1, 0, 2])),
    "avgpool_asymmetric_include_pad_ceil": ("AveragePool", (2, 3, 9, 8), {},
                                            dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 0],
                                                 ceil_mode=1, count_include_pad=1)),
    "avgpool_same_upper": ("AveragePool", (2, 3, 7, 10), {}, dict(kernel_shape=[3, 2], strides=[2, 2],
                                                                  auto_pad="SAME_UPPER")),
    "avgpool_same_lower_include_pad": ("AveragePool", (2, 3, 7, 10), {},
                                       dict(kernel_shape=[4, 3], strides=[3, 2], auto_pad="SAME_LOWER",
                                            count_include_pad=1)),
    "global_avgpool": ("GlobalAveragePool", (2, 3, 5, 4), {}, {}),
    "leaky_relu": ("LeakyRelu", (2, 7), {}, dict(alpha=0.2)),
    "elu": ("Elu", (2, 7), {}, dict(alpha=0.7)),
    "selu": ("Selu", (2, 7), {}, {}),
    "softplus": ("Softplus", (2, 7), {}, {}),
    "gelu_tanh": ("Gelu", (2, 7), {}, dict(approximate="tanh")),
    "hardswish": ("HardSwish", (2, 7), {}, {}),
    "hardsigmoid_torch": ("HardSigmoid", (2, 7), {}, dict(alpha=1 / 6)),
    "clip_relu6": ("Clip", (2, 7), {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}, {}),
    "hardsigmoid_onnx_defaults": ("HardSigmoid", (2, 3, 8), {}, {}),
    "hardsigmoid_alpha_beta": ("HardSigmoid", (2, 3, 8), {}, dict(alpha=-0.3, beta=0.6)),
    "clip_hardtanh": ("Clip", (2, 7), {"lo": np.array(-1, np.float32), "hi": np.array(1, np.float32)}, {}),
    "clip_any_bounds": ("Clip", (2, 7), {"lo": np.array(-2.5, np.float32), "hi": np.array(0.75, np.float32)}, {}),
    "clip_no_bounds": ("Clip", (2, 7), {}, {}),
    "sub_scalar": ("Sub", (2, 7), {"c": np.array(1.5, np.float32)}, {}),
    "div_scalar": ("Div", (2, 7), {"c": np.array([4.0], np.float32)}, {}),
    "add_tensor_constant": ("Add", (2, 3, 4), {"c": w(3, 1)}, {}),
    "mul_tensor_constant": ("Mul", (2, 3, 4), {"c": w(4)}, {}),
    "reshape_copy_and_infer": ("Reshape", (2, 3, 4, 5), {"shape": np.array([0, 3, -1, 2], np.int64)}, {}),
    "slice_axes_steps": ("Slice", (2, 6, 7), {k: np.array(v, np.int64) for k, v in
                                              dict(starts=[1, -5], ends=[100, -1], axes=[1, 2], steps=[2, 1]).items()}, {}),
    "gather_one_index": ("Gather", (2, 5, 3), {"i": np.array(-2, np.int64)}, dict(axis=1)),
    "transpose_two": ("Transpose", (2, 3, 4), {}, dict(perm=[0, 2, 1])),
    "permute": ("Transpose", (2, 3, 4, 5), {}, dict(perm=[0, 2, 3, 1])),
    "flatten_axis2": ("Flatten", (2, 3, 4, 5), {}, dict(axis=2)),  # reshape(N * 3, 20)
    "flatten_axis0": ("Flatten", (2, 3, 4), {}, dict(axis=0)),
    "flatten_axis_rank": ("Flatten", (2, 3, 4), {}, dict(axis=3)),
    "flatten_axis_negative": ("Flatten", (2, 3, 4, 5), {}, dict(axis=-1)),
    "softmax_axis1": ("Softmax", (2, 3, 4), {}, dict(axis=1)),
    "log_softmax": ("LogSoftmax", (2, 5), {}, {}),
    "unsqueeze_two": ("Unsqueeze", (2, 3), {"axes": np.array([1, 3], np.int64)}, {}),
    "squeeze": ("Squeeze", (2, 1, 3), {"axes": np.array([1], np.int64)}, {}),
    "squeeze_two": ("Squeeze", (2, 1, 3, 1), {"axes": np.array([3, 1], np.int64)}, {}),
    "unsqueeze_last": ("Unsqueeze", (2, 3), {"axes": np.array([-1], np.int64)}, {}),
    "relu_no_parameters": ("Relu", (2, 3), {}, {}),
}


@pytest.mark.parametrize("case", CASES)
def test_one_op(tmp_path, case):
    op, shape, consts, attrs = CASES[case]
    opset = 20 if op == "Gelu" else 17  # Gelu is an ONNX op from opset 20 on
    import_and_compare(tmp_path, single_node(tmp_path, op, shape, consts, attrs, opset=opset), [batch(*shape)])


def test_hard_activations_written_as_netdsl_spells_them(tmp_path):
    """ONNX's HardSigmoid defaults (alpha=0.2) are written out, torch's (1/6) are netdsl's; Clip(-1, 1) is
    hardtanh with its defaults, other bounds are given, and Clip's bounds are attributes before opset 11."""
    texts = {case: import_onnx(single_node(tmp_path, *CASES[case]))[0] for case in
             ("hardsigmoid_onnx_defaults", "hardsigmoid_torch", "clip_hardtanh", "clip_any_bounds")}
    assert "-> hardsigmoid(alpha=0.2)" in texts["hardsigmoid_onnx_defaults"]
    assert "-> hardsigmoid\n" in texts["hardsigmoid_torch"]
    assert "-> hardtanh\n" in texts["clip_hardtanh"]
    assert "-> hardtanh(min_val=-2.5, max_val=0.75)" in texts["clip_any_bounds"]
    model = single_node(tmp_path, "Clip", (2, 7), {}, dict(min=-0.5, max=2.0), opset=6)
    assert "-> hardtanh(min_val=-0.5, max_val=2.0)" in import_and_compare(tmp_path, model, [batch(2, 7) * 3])


def test_selu_with_other_constants_is_unsupported_naming_them(tmp_path):
    """netdsl's selu has torch's constants (ONNX's defaults are their float32 values); others do not import."""
    with pytest.raises(NetDSLError, match=r"alpha=1\.5, gamma=1\.25.*netdsl's selu has alpha=1\.67"):
        import_onnx(single_node(tmp_path, "Selu", (2, 7), {}, dict(alpha=1.5, gamma=1.25)))


def test_padding_written_as_netdsl_spells_it(tmp_path):
    """ONNX's pads [top, left, bottom, right] are netdsl's 4-tuple (a pair when symmetric); SAME_UPPER with a
    stride on dynamic sizes is ``padding="same"``, which pads each run as its size needs."""
    texts = {case: import_onnx(single_node(tmp_path, *CASES[case]))[0] for case in
             ("conv_asymmetric_pads", "conv_same_lower", "maxpool_asymmetric_big_pads", "avgpool_same_upper")}
    assert "conv2d(5, 3, stride=(2, 1), padding=(0, 1, 2, 0))" in texts["conv_asymmetric_pads"]
    assert "padding=(1, 1, 0, 1)" in texts["conv_same_lower"]
    assert "maxpool2d(3, stride=2, padding=(2, 0, 1, 2))" in texts["maxpool_asymmetric_big_pads"]
    assert "avgpool2d((3, 2), stride=2, padding=(1, 0), count_include_pad=false)" in \
        texts["avgpool_same_upper"]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], auto_pad="SAME_UPPER", strides=[2, 3]),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")]
    model = helper.make_model(helper.make_graph(nodes, "same", [x], [helper.make_tensor_value_info("y", 1, None)],
                                                [numpy_helper.from_array(w(4, 3, 4, 3), "W")]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = save(model, tmp_path / "same.onnx")
    for h, wd in ((9, 8), (12, 13)):
        text = import_and_compare(tmp_path, path, [batch(2, 3, h, wd)])
    assert text.count('padding="same"') == 2


def test_the_library_function_takes_a_model_in_memory(tmp_path):
    """``import_onnx`` takes a ModelProto (or bytes) too; the network is named after the ONNX graph then."""
    path = single_node(tmp_path, "Conv", (2, 3, 5, 5), {"W": w(4, 3, 3, 3), "B": w(4)}, dict(pads=[1, 1, 1, 1]))
    text, weights = import_onnx(onnx.load(str(path)))
    assert "network single {" in text and "the_conv: conv2d(4, 3, padding=1)" in text
    assert sorted(weights) == ["the_conv.bias", "the_conv.weight"]
    assert import_onnx(path.read_bytes())[0] == text


def flatten_model(tmp_path: Path, dims: list, axis: int) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    node = helper.make_node("Flatten", ["x"], ["y"], axis=axis)
    graph = helper.make_graph([node], "flat", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "flat.onnx")


@pytest.mark.parametrize("dims, axis, written, sizes", [
    (["N", 3, 4, 5], 2, "reshape(N * 3, 20)", [(2, 3, 4, 5)]),
    (["N", 3, "H", 5], 2, "reshape(N * 3, H * 5)", [(2, 3, 4, 5), (1, 3, 7, 5)]),
    (["N", 3, "H", 5], 1, "reshape(N, H * 15)", [(2, 3, 4, 5)]),
    ([2, "T", 6], 0, "reshape(1, T * 12)", [(2, 5, 6)]),
    (["N", 3, 4], 3, "reshape(N * 12, 1)", [(3, 3, 4)]),
])
def test_flatten_at_any_axis_is_a_reshape_to_two_dims(tmp_path, dims, axis, written, sizes):
    """ONNX's Flatten is 2-D whatever the axis: [prod(dims[:axis]), prod(dims[axis:])], dynamic dims included
    while each product holds at most one of them."""
    model = flatten_model(tmp_path, dims, axis)
    for shape in sizes:
        assert f"-> {written}" in import_and_compare(tmp_path, model, [batch(*shape)])


@pytest.mark.parametrize("dims, axis", [(["N", "T", 4], 2), (["N", 3, "H", "W"], 1)])
def test_flatten_to_a_product_of_dynamic_dims_is_unsupported(tmp_path, dims, axis):
    with pytest.raises(NetDSLError, match=f"axis={axis} on .*a product of dynamic dims"):
        import_onnx(flatten_model(tmp_path, dims, axis))


def test_gemm_with_transposed_a_and_softmax_before_opset_13(tmp_path):
    """Gemm's transA is a transpose before the linear; Softmax at opset 11 over the last dim is softmax."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 3])
    nodes = [helper.make_node("Gemm", ["x", "B", "C"], ["g"], transA=1, beta=0.5),
             helper.make_node("Softmax", ["g"], ["y"], axis=1)]
    inits = [numpy_helper.from_array(w(6, 4), "B"), numpy_helper.from_array(w(4), "C")]
    model = helper.make_model(helper.make_graph(nodes, "gemm_t", [x], [helper.make_tensor_value_info("y", 1, None)],
                                                inits), opset_imports=[helper.make_opsetid("", 11)])
    text = import_and_compare(tmp_path, save(model, tmp_path / "gemm_t.onnx"), [batch(6, 3)])
    assert "transpose(0, 1) -> fc1: linear(4)" in text and "-> softmax" in text


def test_tensor_ops_between_inputs(tmp_path):
    """Sub, Mul, MatMul and Concat of two computed tensors, and an output that is an input passed on."""
    x, y = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4]), \
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 3])
    nodes = [helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1]),
             helper.make_node("Sub", ["x", "yt"], ["d"]), helper.make_node("Mul", ["d", "x"], ["p"]),
             helper.make_node("MatMul", ["p", "y"], ["m"]), helper.make_node("Concat", ["m", "m"], ["c"], axis=2),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Identity", ["x"], ["x_out"])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("r", "x_out")]
    model = helper.make_model(helper.make_graph(nodes, "pair", [x, y], outs),
                              opset_imports=[helper.make_opsetid("", 17)])
    save(model, tmp_path / "pair.onnx")
    text = import_and_compare(tmp_path, tmp_path / "pair.onnx", [batch(2, 3, 4), batch(2, 4, 3)])
    assert "x + -" in text and "matmul(" in text and "concat(" in text


# --- errors ---------------------------------------------------------------------------------------------

def test_unsupported_nodes_are_listed_at_once_and_nothing_is_written(tmp_path, capsys):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    inits = [numpy_helper.from_array(w(3, 4, 3, 3), "WT"), numpy_helper.from_array(np.array(-1, np.float32), "lo"),
             numpy_helper.from_array(np.array(1, np.float32), "hi"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    nodes = [helper.make_node("ConvTranspose", ["x", "WT"], ["c"], name="asym", pads=[0, 0, 1, 1]),
             helper.make_node("Erf", ["c"], ["e"], name="the_erf"),
             helper.make_node("Clip", ["e", "lo"], ["k"], name="clip_min"),
             helper.make_node("MaxPool", ["k"], ["p"], name="big_pad", kernel_shape=[2, 2], pads=[2, 2, 2, 2]),
             helper.make_node("Pad", ["p", "pads"], ["y"], name="reflect", mode="reflect")]
    model = helper.make_model(helper.make_graph(nodes, "bad", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    save(model, tmp_path / "bad.onnx")
    out = tmp_path / "out" / "bad.net"
    out.parent.mkdir()
    assert main(["import", str(tmp_path / "bad.onnx"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "5 nodes cannot be imported" in err and "Traceback" not in err
    for needle in ("ConvTranspose node `asym`: asymmetric pads=[0, 0, 1, 1]", "Erf node `the_erf`: the language has no layer",
                   "Clip node `clip_min`: only one bound, min=-1.0, max=None", "MaxPool node `big_pad`: pads [2, 2, 2, 2] reach the kernel size",
                   "Pad node `reflect`: mode=reflect; netdsl has no pad layer"):
        assert needle in err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("content, message", [(b"\x08\x07\x12\x03abc\xff\xff", "is not"),
                                               (b"hello, this is not a model", "is not")])
def test_corrupt_file(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    assert main(["import", str(bad), "-o", str(tmp_path / "m.net")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_missing_file(tmp_path, capsys):
    assert main(["import", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "m.net")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["missing_dir/m.net", "a_dir", "a_dir/m.safetensors"])
def test_output_that_cannot_be_written(tmp_path, capsys, target):
    model = single_node(tmp_path, "Relu", (2, 3), {}, {})
    (tmp_path / "a_dir").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["import", str(model), "-o", str(tmp_path / target)]) == 2
    assert "error:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_weights_target_that_cannot_be_written_leaves_nothing(tmp_path, capsys):
    """The .net target is fine but the .safetensors beside it is a directory: checked before any writing."""
    model = single_node(tmp_path, "Conv", (2, 3, 5, 5), {"W": w(4, 3, 3, 3)}, {})
    (tmp_path / "m.safetensors").mkdir()
    assert main(["import", str(model), "-o", str(tmp_path / "m.net")]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert not (tmp_path / "m.net").exists()


def test_netdsl_export_imports_back_with_its_linears(tmp_path):
    """netdsl writes a linear as Transpose(weight) -> MatMul -> Add: it imports back as one `linear` under
    the weight's label (not a transpose and a matmul of a `param`), equal to onnxruntime's result."""
    from netdsl.interop.onnx_export import export_onnx

    graph = load(Path(__file__).resolve().parent.parent / "examples" / "mlp.net")
    path = tmp_path / "mlp.onnx"
    export_onnx(graph, random_weights(graph, seed=1), path)
    x = np.random.default_rng(0).standard_normal((3, *graph.inputs[0].type.shape[1:])).astype(np.float32)
    text = import_and_compare(tmp_path, path, [x])
    assert "transpose" not in text and "matmul" not in text and "param " not in text, text
    linears = [layer for layer in text.split("->") if "linear(" in layer]
    assert len(linears) == sum(n.op == "linear" for n in graph.nodes), text
