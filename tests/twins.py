"""Independent PyTorch twins of the example models, for checking the reference backend.

Each twin is written from the papers / torchvision with ``torch.nn.functional`` only — it shares no
code with netdsl — and takes the same weights: a dict of NumPy arrays keyed by netdsl's parameter
names (which are torchvision's ``state_dict`` names), as made by ``netdsl.random_weights``.

    out = TWINS["resnet18"](weights, x, dtype=torch.float64)   # x: NumPy [N, 3, H, W]

``Weights`` records which tensors a twin read, so a test can also check that the twin used every
parameter of the netdsl graph (a naming mismatch shows up as a KeyError or an unused tensor).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F


class Weights:
    """netdsl weights as torch tensors of one dtype; remembers which names were read."""

    def __init__(self, arrays: Mapping[str, np.ndarray], dtype: torch.dtype):
        self.arrays = arrays
        self.dtype = dtype
        self.used: set[str] = set()

    def __getitem__(self, name: str) -> torch.Tensor:
        self.used.add(name)
        return torch.from_numpy(np.asarray(self.arrays[name])).to(self.dtype)

    def get(self, name: str):
        return self[name] if name in self.arrays else None

    def unused(self) -> set[str]:
        return set(self.arrays) - self.used


# --- building blocks ---------------------------------------------------------------------------

def conv(w: Weights, x, name, stride=1, padding=0, groups=1):
    return F.conv2d(x, w[f"{name}.weight"], w.get(f"{name}.bias"), stride=stride, padding=padding, groups=groups)


def bn(w: Weights, x, name, eps=1e-5):
    return F.batch_norm(x, w[f"{name}.running_mean"], w[f"{name}.running_var"], w[f"{name}.weight"],
                        w[f"{name}.bias"], training=False, eps=eps)


def fc(w: Weights, x, name):
    return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


# --- models ------------------------------------------------------------------------------------

def lenet5(w: Weights, x):
    x = F.avg_pool2d(torch.tanh(conv(w, x, "c1")), 2)
    x = F.avg_pool2d(torch.tanh(conv(w, x, "c3")), 2)
    x = torch.flatten(x, 1)
    x = torch.tanh(fc(w, x, "f5"))
    x = torch.tanh(fc(w, x, "f6"))
    return fc(w, x, "f7")


def mlp(w: Weights, x):
    x = torch.flatten(x, 1)
    x = F.dropout(F.relu(fc(w, x, "fc1")), 0.2, training=False)
    x = F.dropout(F.relu(fc(w, x, "fc2")), 0.2, training=False)
    return fc(w, x, "fc3")


def alexnet(w: Weights, x):
    x = F.relu(conv(w, x, "features.0", stride=4, padding=2))
    x = F.max_pool2d(x, 3, 2)
    x = F.relu(conv(w, x, "features.3", padding=2))
    x = F.max_pool2d(x, 3, 2)
    x = F.relu(conv(w, x, "features.6", padding=1))
    x = F.relu(conv(w, x, "features.8", padding=1))
    x = F.relu(conv(w, x, "features.10", padding=1))
    x = F.max_pool2d(x, 3, 2)
    x = torch.flatten(F.adaptive_avg_pool2d(x, (6, 6)), 1)
    x = F.relu(fc(w, x, "classifier.1"))
    x = F.relu(fc(w, x, "classifier.4"))
    return fc(w, x, "classifier.6")


VGG11_CFG = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg11(w: Weights, x):
    i = 0
    for v in VGG11_CFG:
        if v == "M":
            x = F.max_pool2d(x, 2, 2)
            i += 1
        else:
            x = F.relu(conv(w, x, f"features.{i}", padding=1))
            i += 2
    x = torch.flatten(F.adaptive_avg_pool2d(x, (7, 7)), 1)
    x = F.relu(fc(w, x, "classifier.0"))
    x = F.relu(fc(w, x, "classifier.3"))
    return fc(w, x, "classifier.6")


def _basic_conv(w, x, name, stride=1, padding=0):
    return F.relu(bn(w, conv(w, x, f"{name}.conv", stride, padding), f"{name}.bn", eps=0.001))


GOOGLENET_INCEPTIONS = {  # name: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


def _inception(w, x, name):
    b1 = _basic_conv(w, x, f"{name}.branch1")
    b2 = _basic_conv(w, _basic_conv(w, x, f"{name}.branch2.0"), f"{name}.branch2.1", padding=1)
    b3 = _basic_conv(w, _basic_conv(w, x, f"{name}.branch3.0"), f"{name}.branch3.1", padding=1)
    b4 = _basic_conv(w, F.max_pool2d(x, 3, 1, 1, ceil_mode=True), f"{name}.branch4.1")
    for b, ch in zip((b1, b2, b3, b4), np.array(GOOGLENET_INCEPTIONS[name])[[0, 2, 4, 5]]):
        assert b.shape[1] == ch
    return torch.cat([b1, b2, b3, b4], 1)


def googlenet(w: Weights, x):
    x = _basic_conv(w, x, "conv1", stride=2, padding=3)
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = _basic_conv(w, x, "conv2")
    x = _basic_conv(w, x, "conv3", padding=1)
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = _inception(w, x, "inception3a")
    x = _inception(w, x, "inception3b")
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    for n in ("4a", "4b", "4c", "4d", "4e"):
        x = _inception(w, x, f"inception{n}")
    x = F.max_pool2d(x, 2, 2, ceil_mode=True)
    x = _inception(w, x, "inception5a")
    x = _inception(w, x, "inception5b")
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    return fc(w, F.dropout(x, 0.2, training=False), "fc")


def _basic_block(w, x, name, stride):
    y = F.relu(bn(w, conv(w, x, f"{name}.conv1", stride, 1), f"{name}.bn1"))
    y = bn(w, conv(w, y, f"{name}.conv2", 1, 1), f"{name}.bn2")
    if f"{name}.downsample.0.weight" in w.arrays:
        x = bn(w, conv(w, x, f"{name}.downsample.0", stride), f"{name}.downsample.1")
    return F.relu(y + x)


def _bottleneck(w, x, name, stride):  # torchvision v1.5: the stride is on the 3x3 conv
    y = F.relu(bn(w, conv(w, x, f"{name}.conv1"), f"{name}.bn1"))
    y = F.relu(bn(w, conv(w, y, f"{name}.conv2", stride, 1), f"{name}.bn2"))
    y = bn(w, conv(w, y, f"{name}.conv3"), f"{name}.bn3")
    if f"{name}.downsample.0.weight" in w.arrays:
        x = bn(w, conv(w, x, f"{name}.downsample.0", stride), f"{name}.downsample.1")
    return F.relu(y + x)


def _resnet(block, layers):
    def model(w: Weights, x):
        x = F.relu(bn(w, conv(w, x, "conv1", 2, 3), "bn1"))
        x = F.max_pool2d(x, 3, 2, 1)
        for i, n in enumerate(layers):
            for j in range(n):
                x = block(w, x, f"layer{i + 1}.{j}", 2 if (i > 0 and j == 0) else 1)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return fc(w, x, "fc")
    return model


resnet18 = _resnet(_basic_block, [2, 2, 2, 2])
resnet50 = _resnet(_bottleneck, [3, 4, 6, 3])


MOBILENET_V2_SETTINGS = [  # t, c, n, s  (Sandler et al. 2018, Table 2)
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]


def _conv_bn_relu6(w, x, name, stride=1, groups=1):
    k = w.arrays[f"{name}.0.weight"].shape[-1]
    return F.relu6(bn(w, conv(w, x, f"{name}.0", stride, (k - 1) // 2, groups), f"{name}.1"))


def mobilenet_v2(w: Weights, x):
    x = _conv_bn_relu6(w, x, "features.0", stride=2)
    inp, i = 32, 1
    for t, c, n, s in MOBILENET_V2_SETTINGS:
        for j in range(n):
            stride = s if j == 0 else 1
            name, hidden, k = f"features.{i}.conv", inp * t, 0
            y = x
            if t != 1:
                y = _conv_bn_relu6(w, y, f"{name}.0")
                k = 1
            y = _conv_bn_relu6(w, y, f"{name}.{k}", stride=stride, groups=hidden)
            y = bn(w, conv(w, y, f"{name}.{k + 1}"), f"{name}.{k + 2}")
            x = x + y if stride == 1 and inp == c else y
            inp, i = c, i + 1
    x = _conv_bn_relu6(w, x, f"features.{i}")
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    return fc(w, F.dropout(x, 0.2, training=False), "classifier.1")


def _unet_double_conv(w, x, name):  # (3x3 conv, no bias -> batchnorm -> relu) twice: name.0, name.1
    for i in range(2):
        x = F.relu(bn(w, conv(w, x, f"{name}.{i}.conv", padding=1), f"{name}.{i}.bn"))
    return x


def _unet_up(w, x, skip, name):  # 2x2 stride-2 up-convolution, skip first along channels, double conv
    y = F.conv_transpose2d(x, w[f"{name}.up.weight"], w[f"{name}.up.bias"], stride=2)
    return _unet_double_conv(w, torch.cat([skip, y], 1), f"{name}.conv")


def unet(w: Weights, x):  # Ronneberger et al. 2015 with padded convs and batchnorm; base 16, depth 3
    e1 = _unet_double_conv(w, x, "inc")
    e2 = _unet_double_conv(w, F.max_pool2d(e1, 2), "down1.conv")
    e3 = _unet_double_conv(w, F.max_pool2d(e2, 2), "down2.conv")
    b = _unet_double_conv(w, F.max_pool2d(e3, 2), "down3.conv")
    d = _unet_up(w, b, e3, "up1")
    d = _unet_up(w, d, e2, "up2")
    d = _unet_up(w, d, e1, "up3")
    return conv(w, d, "outc")


def _sinusoids(t: int, d: int, dtype) -> torch.Tensor:  # "Attention Is All You Need", section 3.5
    pos = torch.arange(t, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), i / d)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(t, d).to(dtype)


def _self_attention(w, x, name, heads):
    n, t, d = x.shape

    def split(proj):  # [N, T, d] -> [N, heads, T, d / heads]
        return F.linear(x, w[f"{name}.{proj}.weight"], w[f"{name}.{proj}.bias"]).view(n, t, heads, -1).transpose(1, 2)

    a = F.scaled_dot_product_attention(split("q_proj"), split("k_proj"), split("v_proj"))
    a = a.transpose(1, 2).reshape(n, t, d)
    return F.linear(a, w[f"{name}.out_proj.weight"], w[f"{name}.out_proj.bias"])


def _encoder_layer(w, x, name, heads):  # nn.TransformerEncoderLayer, post-norm, ReLU
    d = x.shape[-1]
    y = F.layer_norm(x + _self_attention(w, x, f"{name}.self_attn", heads), (d,), w[f"{name}.norm1.weight"],
                     w[f"{name}.norm1.bias"])
    f = F.linear(F.relu(F.linear(y, w[f"{name}.linear1.weight"], w[f"{name}.linear1.bias"])),
                 w[f"{name}.linear2.weight"], w[f"{name}.linear2.bias"])
    return F.layer_norm(y + f, (d,), w[f"{name}.norm2.weight"], w[f"{name}.norm2.bias"])


def transformer_encoder(w: Weights, tokens):
    x = F.embedding(tokens.long(), w["embed.weight"]) * 8.0  # * sqrt(d_model)
    x = x + _sinusoids(x.shape[1], x.shape[2], x.dtype)
    for i in range(2):
        x = _encoder_layer(w, x, f"layers.{i}", heads=4)
    return F.linear(x, w["lm_head.weight"], w["lm_head.bias"])


def _mha_self(w, x, name, heads, causal=False):  # nn.MultiheadAttention(batch_first=True), query = key = value
    n, t, d = x.shape
    q, k, v = F.linear(x, w[f"{name}.in_proj_weight"], w[f"{name}.in_proj_bias"]).chunk(3, dim=-1)

    def split(y):
        return y.reshape(n, t, heads, d // heads).transpose(1, 2)

    a = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=causal)
    return F.linear(a.transpose(1, 2).reshape(n, t, d), w[f"{name}.out_proj.weight"], w[f"{name}.out_proj.bias"])


def _ln(w, x, name, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps)


def gpt2(w: Weights, ids):  # GPT-2 small: pre-norm, causal, GELU (tanh), learned positions, tied head
    t = ids.shape[1]
    x = F.embedding(ids.long(), w["wte.weight"]) + w["wpe.weight"][:t]
    for i in range(12):
        name = f"h.{i}"
        h = _ln(w, x, f"{name}.ln_1")
        q, k, v = fc(w, h, f"{name}.attn.c_attn").chunk(3, dim=-1)
        heads = [y.unflatten(-1, (12, 64)).transpose(1, 2) for y in (q, k, v)]
        a = F.scaled_dot_product_attention(*heads, is_causal=True).transpose(1, 2).flatten(2)
        x = x + fc(w, a, f"{name}.attn.c_proj")
        m = F.gelu(fc(w, _ln(w, x, f"{name}.ln_2"), f"{name}.mlp.c_fc"), approximate="tanh")
        x = x + fc(w, m, f"{name}.mlp.c_proj")
    return _ln(w, x, "ln_f") @ w["wte.weight"].T


def vit_b16(w: Weights, image):  # torchvision's VisionTransformer forward, eval mode
    x = conv(w, image, "conv_proj", stride=16).flatten(2).transpose(1, 2)
    x = torch.cat([w["class_token"].expand(x.shape[0], -1, -1), x], dim=1) + w["encoder.pos_embedding"]
    for i in range(12):
        name = f"encoder.layers.encoder_layer_{i}"
        x = x + _mha_self(w, _ln(w, x, f"{name}.ln_1", 1e-6), f"{name}.self_attention", 12)
        y = _ln(w, x, f"{name}.ln_2", 1e-6)
        x = x + fc(w, F.gelu(fc(w, y, f"{name}.mlp.0")), f"{name}.mlp.3")
    return fc(w, _ln(w, x, "encoder.ln", 1e-6)[:, 0], "heads.head")


def translator(w: Weights, src, tgt):  # embeddings + torch.nn.Transformer itself (its own code) + generator
    model = torch.nn.Transformer(512, 8, 6, 6, 2048, dropout=0.0, batch_first=True).eval().to(w.dtype)
    names = [k for k in model.state_dict()]
    model.load_state_dict({k: w[f"transformer.{k}"] for k in names})
    s = F.embedding(src.long(), w["src_tok.weight"]) * 512 ** 0.5
    t = F.embedding(tgt.long(), w["tgt_tok.weight"]) * 512 ** 0.5
    s = s + _sinusoids(s.shape[1], 512, s.dtype)
    t = t + _sinusoids(t.shape[1], 512, t.dtype)
    mask = model.generate_square_subsequent_mask(t.shape[1], dtype=w.dtype)
    return fc(w, model(s, t, tgt_mask=mask, tgt_is_causal=True), "generator")


def _torch_recurrent(w: Weights, module, name, x, state=None):
    """torch.nn's own RNN / LSTM / GRU, its state_dict read from the weights as it is (names unchanged)."""
    module = module.eval().to(w.dtype)
    module.load_state_dict({k: w[f"{name}.{k}"] for k in module.state_dict()})
    return module(x, state)


def rnn(w: Weights, x):  # the seed's RNN: nn.RNN(256, 128), tanh, and a linear head at every step
    seq, _ = _torch_recurrent(w, torch.nn.RNN(256, 128, batch_first=True), "cell", x)
    return fc(w, seq, "head")


def lstm_lm(w: Weights, ids):  # embedding -> nn.LSTM(128, 256, num_layers=2) -> linear over the vocabulary
    out, _ = _torch_recurrent(w, torch.nn.LSTM(128, 256, num_layers=2, batch_first=True), "lstm",
                              F.embedding(ids.long(), w["embed.weight"]))
    return fc(w, out, "decoder")


def seq2seq(w: Weights, src, tgt):  # a GRU encoder whose final state starts a GRU decoder
    _, state = _torch_recurrent(w, torch.nn.GRU(64, 128, batch_first=True), "encoder",
                                F.embedding(src.long(), w["src_embed.weight"]))
    out, _ = _torch_recurrent(w, torch.nn.GRU(64, 128, batch_first=True), "decoder",
                              F.embedding(tgt.long(), w["tgt_embed.weight"]), state)
    return fc(w, out, "head")


TWINS: dict[str, Callable] = {
    "lenet5": lenet5, "mlp": mlp, "alexnet": alexnet, "vgg11": vgg11, "googlenet": googlenet,
    "resnet18": resnet18, "resnet50": resnet50, "mobilenet_v2": mobilenet_v2, "unet": unet,
    "transformer_encoder": transformer_encoder, "gpt2": gpt2, "vit_b16": vit_b16, "transformer": translator,
    "rnn": rnn, "lstm_lm": lstm_lm, "seq2seq": seq2seq,
}


def run_twin(model: str, weights: Mapping[str, np.ndarray], x, dtype=torch.float32,
             check_all_used: bool = True) -> np.ndarray:
    """Run the twin of ``model`` in ``dtype`` (no grad) on ``x``, an array or a tuple of arrays (the
    network's inputs in order); return its output as a NumPy array."""
    w = Weights(weights, dtype)
    with torch.no_grad():
        xs = [torch.from_numpy(np.asarray(a)) for a in (x if isinstance(x, tuple) else (x,))]
        out = TWINS[model](w, *(a if not a.is_floating_point() else a.to(dtype) for a in xs))
    if check_all_used and w.unused():
        raise AssertionError(f"twin of {model} ignored parameters: {sorted(w.unused())[:5]}")
    return out.numpy()


# --- MobileNetV3-Small as nn.Modules -------------------------------------------------------------
# Howard et al. 2019, as torchvision.models.mobilenet_v3_small builds it: plain torch.nn layers whose
# attribute names give torchvision's state_dict keys (features.4.block.2.fc1.weight, classifier.3.bias).

def _make_divisible(v: float, divisor: int = 8) -> int:  # torchvision's rounding of the SE widths
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


MOBILENET_V3_SMALL_SETTINGS = [  # input, kernel, expanded, out, SE, activation, stride (paper's Table 2)
    (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
]


def _conv_bn_act(cin, cout, k, stride=1, groups=1, act=None) -> torch.nn.Sequential:
    """torchvision's Conv2dNormActivation: conv (no bias) -> batchnorm (eps 0.001) [-> activation]."""
    layers = [torch.nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              torch.nn.BatchNorm2d(cout, eps=0.001, momentum=0.01)]
    return torch.nn.Sequential(*layers, *([act()] if act else []))


class SqueezeExcitation(torch.nn.Module):
    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc1 = torch.nn.Conv2d(c, squeeze, 1)
        self.fc2 = torch.nn.Conv2d(squeeze, c, 1)
        self.activation = torch.nn.ReLU()
        self.scale_activation = torch.nn.Hardsigmoid()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class InvertedResidualV3(torch.nn.Module):
    def __init__(self, cin, k, expanded, cout, use_se, activation, stride):
        super().__init__()
        act = torch.nn.Hardswish if activation == "HS" else torch.nn.ReLU
        layers = []
        if expanded != cin:
            layers.append(_conv_bn_act(cin, expanded, 1, act=act))
        layers.append(_conv_bn_act(expanded, expanded, k, stride, groups=expanded, act=act))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4)))
        layers.append(_conv_bn_act(expanded, cout, 1))
        self.block = torch.nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res_connect else y


class MobileNetV3Small(torch.nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        blocks = [_conv_bn_act(3, 16, 3, 2, act=torch.nn.Hardswish)]
        blocks += [InvertedResidualV3(*cfg) for cfg in MOBILENET_V3_SMALL_SETTINGS]
        blocks.append(_conv_bn_act(96, 6 * 96, 1, act=torch.nn.Hardswish))
        self.features = torch.nn.Sequential(*blocks)
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.classifier = torch.nn.Sequential(torch.nn.Linear(576, 1024), torch.nn.Hardswish(),
                                              torch.nn.Dropout(0.2), torch.nn.Linear(1024, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_small(w: Weights, x):
    """The nn.Module twin with netdsl's weights loaded strictly (each tensor read through ``w``)."""
    with torch.device("meta"):  # no storage and no initialisation: every tensor comes from ``w``
        module = MobileNetV3Small()
    state = {k: torch.zeros((), dtype=torch.long) if k.endswith("num_batches_tracked") else w[k]
             for k in module.state_dict()}
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()(x)


TWINS["mobilenet_v3_small"] = mobilenet_v3_small
