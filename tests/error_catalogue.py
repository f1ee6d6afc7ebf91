"""The catalogue of bad inputs: model files, command-line flags, input and weight files, API calls.

Each entry is one mistake a user (or an attacker) makes, with what the error must say and where it must
point. ``tests/test_error_catalogue.py`` runs every entry and asserts the error class, the key words of
the message, a hint, the location (file:line:col and a caret under the right text), exit code 2 for the
command line, and that no file was left behind.

Entries come in three kinds:

- ``Source``: a .net file (and the files it imports) given to ``netdsl init -o w.safetensors``;
  ``at`` is the text the caret must point to (its first occurrence, or its ``nth``).
- ``Cli``: a command line over prepared files (``{model}``, ``{dir}``, and the files of ``files``).
- ``Api``: a call of the public Python API that must raise ``NetDSLError``.

The attribute family is generated from the op registry: every attribute of every op given a value of
the wrong type, a non-finite number, or a non-positive size, at the argument that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from netdsl.ops import REGISTRY
from netdsl.ops.registry import OpKind


@dataclass(frozen=True)
class Source:
    id: str
    text: str
    words: tuple[str, ...]
    at: str | None  # the text the caret points to (None: an error with no location in the file)
    nth: int = 1
    imports: dict[str, str | bytes] = field(default_factory=dict)  # more files next to the model
    raw: bytes | None = None  # the file's bytes, when they are not UTF-8 text
    where: str | None = None  # the imported file ``at`` is in (default: the model file)


@dataclass(frozen=True)
class Cli:
    id: str
    argv: tuple[str, ...]
    words: tuple[str, ...]
    model: str | None = None  # the model file's text (default: SMALL)
    files: dict[str, Callable[[Any], None]] = field(default_factory=dict)  # name -> writer(path)
    at: str | None = None  # the text in the model file the caret points to


@dataclass(frozen=True)
class Api:
    id: str
    call: Callable[[Any], Any]  # given the test's tmp_path
    words: tuple[str, ...]


SMALL = """\
network small {
    input x: f32[N, 3, H=8, W=8]
    y = x -> c1: conv2d(4, 3) -> relu -> global_avgpool -> flatten -> fc: linear(5)
    output y
}
"""

TWO_OUT = """\
network heads {
    input x: f32[N, 6]
    h = x -> trunk: linear(8) -> relu
    output scores = h -> cls: linear(3), probs = h -> cls2: linear(3) -> softmax
}
"""


def net(body: str, inputs: str = "input x: f32[N, 4, H=8, W=8]", name: str = "n") -> str:
    """A network around ``body`` (statements, one per line)."""
    lines = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return f"network {name} {{\n    {inputs}\n{lines}}}\n"


# --- generated: every attribute of every op, given a wrong value ---------------------------------------

# values for the attributes an op requires, so that the attribute under test is the one at fault
_FILL = {"out_channels": "4", "kernel_size": "3", "out_features": "4", "groups": "2", "dim0": "0", "dim1": "1",
         "num_embeddings": "10", "embedding_dim": "4", "hidden_size": "4", "dim": "1", "index": "0",
         "split_size_or_sections": "2", "chunks": "2", "sizes": "(2, 2)", "shape": "(-1,)", "dims": "(0, 1, 2, 3)"}
_BAD = {"int": (('"zz"', "integer"), ("1.5", "integer")),
        "float": (('"zz"', "number"), ("1e999", "finite"), ("1e999 - 1e999", "finite")),
        "bool": (("3", "true or false"),),
        "str": (('"zz_bad"', "one of"),),
        "pair": (('"zz"', "pair"), ("(1, 2, 3)", "pair")),
        "padding": (('"zz"', "padding"), ("(1, 2, 3)", "padding"))}


def _user_ops():
    return [op for op in REGISTRY.values()
            if op.kind is not OpKind.FUSED and not op.constant and (op.arity == 1 or op.name in ("rnn", "lstm", "gru"))]


def attribute_entries() -> list[Source]:
    entries = []
    for op in _user_ops():
        entries.append(Source(f"attr-unknown-{op.name}", net(f"y = x -> {op.name}(zzz_unknown=1)\noutput y"),
                              (f"`{op.name}` has no attribute `zzz_unknown`",), "zzz_unknown=1"))
        required = [a for a in op.attrs if a.required]
        for attr in op.attrs:
            bad = list(_BAD.get(attr.type, ()))
            if attr.positive and attr.type in ("int", "pair"):
                bad += [("0", "positive"), ("-1", "positive")]
            elif attr.positive and attr.type == "float":
                bad += [("0", "positive")]
            for i, (value, word) in enumerate(bad):
                args = "".join(f"{r.name}={_FILL[r.name]}, " for r in required if r is not attr)
                text = net(f"y = x -> {op.name}({args}{attr.name}={value})\noutput y")
                entries.append(Source(f"attr-{op.name}-{attr.name}-{i}", text, (f"`{attr.name}`", word),
                                      f"{attr.name}={value}"))
    return entries


# --- model files, by hand ------------------------------------------------------------------------------

def _deep_group(n: int) -> str:
    return net("y = x -> " + "(relu -> " * n + "relu" + ")" * n + "\noutput y")


def _import_chain(n: int) -> dict[str, str]:
    files = {f"m{i}.net": f'import "m{i + 1}.net"\nblock b{i}() {{\n    input x\n    output x\n}}\n' for i in range(n)}
    files[f"m{n}.net"] = "block last() {\n    input x\n    output x\n}\n"
    return files


SOURCES: list[Source] = [
    # syntax
    Source("syntax-missing-paren", net("y = x -> conv2d(4, 3 -> relu\noutput y"), ("unexpected", "`)` missing"), "output y"),
    Source("syntax-missing-brace", "network n {\n    input x: f32[N, 4]\n    output x\n", ("end of file",), None),
    Source("syntax-stray-token", net("y = x -> relu )\noutput y"), ("unmatched `)`",), ")"),
    Source("syntax-chain-ends-in-arrow", net("y = x -> relu ->\noutput y"), ("unexpected",), "output y"),
    Source("syntax-double-equals", net("y == x\noutput y"), ("unexpected `=`",), "= x"),
    Source("syntax-unterminated-string", net('y = x -> gelu(approximate="tanh)\noutput y'), ("unexpected",), '"'),
    Source("syntax-bad-character", net("y = x @ x\noutput y"), ("unexpected",), "@"),
    Source("syntax-network-without-name", "network {\n    input x: f32[N, 4]\n    output x\n}\n", ("unexpected",), "{"),
    Source("syntax-block-without-parens", "block b {\n    input x\n    output x\n}\n", ("unexpected",), "{"),
    Source("syntax-number-with-letters", net("y = x -> linear(3x)\noutput y"), ("unexpected",), "x)"),
    Source("syntax-output-without-value", net("y = x -> relu\noutput"), ("unexpected",), "}"),
    Source("syntax-statement-outside", "y = x\n", ("unexpected",), "y"),
    Source("syntax-assign-to-number", net("3 = x\noutput x"), ("unexpected `3`",), "3 = x"),
    Source("syntax-empty-call-comma", net("y = x -> linear(3,)\noutput y"), ("unexpected",), ")"),
    Source("syntax-label-without-layer", net("y = x -> fc:\noutput y"), ("unexpected",), "output"),
    Source("syntax-unclosed-subscript", net("y = x[0\noutput y"), ("unexpected",), "output"),
    Source("syntax-colon-in-type", net("output x", inputs="input x: f32[N: 4]"), ("unexpected",), ":", nth=2),
    Source("syntax-unknown-keyword-use", net("output x", inputs="input: f32[N, 4]"), ("unexpected",), ":"),
    Source("syntax-nesting-too-deep", _deep_group(150), ("nest",), "(", nth=101),
    Source("syntax-calls-too-deep", net("y = " + "relu(" * 400 + "x" + ")" * 400 + "\noutput y"), ("nest",), "relu(", nth=101),
    # files and encodings
    Source("file-empty", "", ("no network",), None),
    Source("file-only-comments", "# nothing here\n# at all\n", ("no network",), None),
    Source("file-only-blocks", "block b() {\n    input x\n    output x\n}\n", ("no network",), None),
    Source("encoding-latin1-comment", "", ("UTF-8",), None, raw=b"# caf\xe9\nnetwork n {\n}\n"),
    Source("encoding-nul-byte", "", ("unexpected",), None, raw=b"network n {\n    input x: f32[N, 4]\x00\n    output x\n}\n"),
    Source("encoding-line-separator", "network n {  # a\u2028b\x0cc\n    input x: f32[N, 4]\n    y = x -> rleu\n    output y\n}\n",
           ("unknown layer `rleu`",), "rleu"),
    # names
    Source("name-unknown-layer", net("y = x -> rleu\noutput y"), ("unknown layer `rleu`", "relu"), "rleu"),
    Source("name-unknown-layer-case", net("y = x -> ReLU\noutput y"), ("`ReLU`", "relu"), "ReLU"),
    Source("name-unknown-value", net("y = z -> relu\noutput y"), ("`z`",), "z"),
    Source("name-unknown-output", net("y = x -> relu\noutput q"), ("`q`",), "q"),
    Source("name-defined-twice", net("y = x -> relu\ny = x -> tanh\noutput y"), ("`y`",), "y = x -> tanh"),
    Source("name-used-before-defined", net("y = z -> relu\nz = x -> tanh\noutput y"), ("`z`",), "z"),
    Source("name-label-twice", net("y = x -> a: conv2d(4, 1) -> a: conv2d(4, 1)\noutput y"), ("label `a` is used twice",), "conv2d(4, 1)", nth=2),
    Source("name-input-twice", "network n {\n    input x: f32[N, 4], x: f32[N, 4]\n    output x\n}\n", ("`x`",), "x", nth=2),
    Source("name-network-twice", "network n {\n    input x: f32[N, 4]\n    output x\n}\n"
           "network n {\n    input x: f32[N, 4]\n    output x\n}\n", ("`n` is defined twice",), "n {", nth=2),
    Source("name-unknown-init", net("param w: [4] = gaussian(1)\noutput x"), ("`gaussian`",), "gaussian"),
    Source("name-unknown-role", net("y = x -> fc: linear(4)\nz = fc.wieght\noutput z", inputs="input x: f32[N, 4]"),
           ("wieght",), "fc.wieght"),
    Source("name-unknown-label-ref", net("z = nope.weight\noutput z"), ("nope",), "nope.weight"),
    Source("name-output-twice", net("output y = x, y = x"), ("output `y` is declared twice",), "y = x", nth=2),
    # blocks
    Source("block-too-many-args", "block b(c) {\n    input x\n    output x -> linear(c)\n}\n"
           + net("y = x -> b(3, 4)\noutput y", inputs="input x: f32[N, 4]"), ("takes",), "4)"),
    Source("block-unknown-kwarg", "block b(c) {\n    input x\n    output x -> linear(c)\n}\n"
           + net("y = x -> b(d=3)\noutput y", inputs="input x: f32[N, 4]"), ("`d`",), "d=3"),
    Source("block-missing-param", "block b(c) {\n    input x\n    output x -> linear(c)\n}\n"
           + net("y = x -> b()\noutput y", inputs="input x: f32[N, 4]"), ("needs parameter `c`",), "b()"),
    Source("block-recursive", "block b() {\n    input x\n    output x -> b\n}\n"
           + net("y = x -> b\noutput y"), ("recurs",), "b\n}", nth=1),
    Source("block-without-output", "block b() {\n    input x\n    y = x -> relu\n}\n"
           + net("y = x -> b\noutput y"), ("output",), "b()"),
    Source("block-input-type-mismatch", "block b() {\n    input x: f32[N, 8]\n    output x\n}\n"
           + net("y = x -> b\noutput y", inputs="input x: f32[N, 4]"), ("[N, 8]",), "x: f32[N, 8]"),
    Source("block-input-dtype-mismatch", "block b() {\n    input x: i64[N, 4]\n    output x\n}\n"
           + net("y = x -> b\noutput y", inputs="input x: f32[N, 4]"), ("i64",), "x: i64"),
    Source("block-repeat-zero", net("y = x -> relu * 0\noutput y"), ("repetition count",), "0"),
    Source("block-repeat-string", net('y = x -> relu * "two"\noutput y'), ("repetition count",), '"two"'),
    Source("block-repeat-huge", net("y = x -> relu * 100000000\noutput y"), ("repet",), "100000000"),
    Source("block-param-twice", "block b(c, c) {\n    input x\n    output x\n}\n" + net("output x"), ("`c`",), "c", nth=3),
    Source("block-two-results-one-name", "block b() {\n    input x\n    output x, x -> relu\n}\n"
           + net("y = x -> b -> relu\noutput y"), ("2",), "b", nth=3),
    Source("block-unknown-in-block", "block b() {\n    input x\n    output x -> rleu\n}\n"
           + net("y = x -> b\noutput y"), ("unknown layer `rleu`",), "rleu"),
    # types and dims
    Source("type-unknown-dtype", net("output x", inputs="input x: f33[N, 4]"), ("f33",), "f33"),
    Source("type-quantised-dtype", net("output x", inputs="input x: q8[N, 4]"), ("q8",), "q8"),
    Source("type-missing-on-input", net("output x", inputs="input x"), ("needs a type",), "x"),
    Source("type-static-zero", net("output x", inputs="input x: f32[N, 0]"), ("0",), "0"),
    Source("type-default-zero", net("output x", inputs="input x: f32[N, H=0]"), ("at least 1", "H"), "0]"),
    Source("type-two-defaults", net("output x, y", inputs="input x: f32[N, H=4], y: f32[N, H=5]"), ("two defaults",), "H=5"),
    Source("type-huge-dim", net("output x", inputs="input x: f32[N, 100000000000000000000]"), ("64-bit",), "100000000000000000000"),
    Source("type-bool-into-relu", net("y = m -> relu\noutput y", inputs="input m: bool[N, 4]"), ("bool",), "relu"),
    Source("type-float-into-embedding", net("y = x -> embedding(10, 4)\noutput y", inputs="input x: f32[N, 4]"),
           ("integer",), "embedding(10, 4)"),
    # shapes
    Source("shape-conv-on-2d", net("y = x -> conv2d(4, 3)\noutput y", inputs="input x: f32[N, 4]"), ("conv2d",), "conv2d(4, 3)"),
    Source("shape-global-maxpool-on-2d", net("y = x -> global_maxpool\noutput y", inputs="input x: f32[N, 4]"),
           ("global_maxpool", "[N, C, H, W]"), "global_maxpool"),
    Source("shape-add-channels", net("y = x -> conv2d(8, 1)\nz = y + x\noutput z"), ("8", "4"), "y + x"),
    Source("shape-concat-sizes", net("y = x -> maxpool2d(2)\nz = concat(x, y)\noutput z"), ("concat",), "concat(x, y)"),
    Source("shape-matmul-inner", net("y = matmul(x, w)\noutput y", inputs="input x: f32[N, 4], w: f32[5, 3]"),
           ("matmul",), "matmul(x, w)"),
    Source("shape-reshape-numel", net("y = x -> reshape((7, 5))\noutput y", inputs="input x: f32[2, 4]"), ("reshape",), "reshape((7, 5))"),
    Source("shape-permute-not-perm", net("y = x -> permute((0, 0, 1, 2))\noutput y"), ("permutation",), "permute((0, 0, 1, 2))"),
    Source("shape-transpose-range", net("y = x -> transpose(0, 9)\noutput y"), ("dim1=9", "out of range"), "transpose(0, 9)"),
    Source("shape-softmax-dim-range", net("y = x -> softmax(dim=7)\noutput y"), ("dim=7", "out of range"), "softmax(dim=7)"),
    Source("shape-flatten-range", net("y = x -> flatten(start_dim=9)\noutput y"), ("start_dim=9", "out of range"), "flatten(start_dim=9)"),
    Source("shape-select-range", net("y = x[:, 9]\noutput y"), ("9",), "9"),
    Source("shape-too-many-indices", net("y = x[0, 0, 0, 0, 0]\noutput y"), ("ind",), "x[0, 0, 0, 0, 0]"),
    Source("shape-slice-step-zero", net("y = x[:, ::0]\noutput y"), ("step",), "::0"),
    Source("shape-float-index", net("y = x[:, 1.5]\noutput y"), ("1.5",), "1.5"),
    Source("shape-chunk-dim-range", net("a, b = x -> chunk(2, dim=9)\noutput a"), ("dim=9", "out of range"), "chunk(2, dim=9)"),
    Source("shape-split-sum", net("a, b = x -> split((1, 2), dim=1)\noutput a"), ("add up to 3",), "split((1, 2), dim=1)"),
    Source("shape-expand-mismatch", net("y = x -> expand((2, 5, 8, 8))\noutput y"), ("expand",), "expand((2, 5, 8, 8))"),
    Source("shape-unflatten-product", net("y = x -> unflatten(1, (3, 3))\noutput y"), ("cannot take a shape of 9",), "unflatten(1, (3, 3))"),
    Source("shape-conv-groups", net("y = x -> conv2d(6, 3, groups=4)\noutput y"), ("not divisible by groups=4",), "conv2d(6, 3, groups=4)"),
    Source("shape-conv-empty", net("y = x -> conv2d(4, 3)\noutput y", inputs="input x: f32[N, 4, 2, 2]"), ("smaller than the window",), "conv2d(4, 3)"),
    Source("shape-pool-empty", net("y = x -> maxpool2d(5)\noutput y", inputs="input x: f32[N, 4, 2, 2]"), ("smaller than the window",), "maxpool2d(5)"),
    Source("shape-conv-empty-default", net("y = x -> conv2d(4, 5)\noutput y", inputs="input x: f32[N, 4, H=3, W=3]"),
           ("H=3",), "conv2d(4, 5)"),
    Source("shape-upsample-both", net("y = x -> upsample(scale_factor=2, size=4)\noutput y"), ("size",), "upsample"),
    Source("shape-upsample-neither", net("y = x -> upsample\noutput y"), ("scale_factor",), "upsample"),
    Source("shape-dropout-range", net("y = x -> dropout(p=1.5)\noutput y"), ("`p`", "from 0.0 to 1.0"), "p=1.5"),
    Source("shape-layernorm-dims", net("y = x -> layernorm(dims=9)\noutput y"), ("last 9 dims",), "layernorm(dims=9)"),
    Source("shape-groupnorm-groups", net("y = x -> groupnorm(3)\noutput y"), ("3",), "groupnorm(3)"),
    Source("shape-hardtanh-bounds", net("y = x -> hardtanh(min_val=2, max_val=1)\noutput y"),
           ("min_val=2.0", "greater than max_val=1.0"), "hardtanh(min_val=2, max_val=1)"),
    Source("shape-pool-padding-kernel", net("y = x -> maxpool2d(3, padding=(3, 0, 0, 0))\noutput y"),
           ("(3, 0, 0, 0)", "smaller than the kernel size"), "maxpool2d(3, padding=(3, 0, 0, 0))"),
    Source("attr-conv2d-padding-four-negative", net("y = x -> conv2d(4, 3, padding=(1, -1, 0, 0))\noutput y"),
           ("`padding`", "negative"), "padding=(1, -1, 0, 0)"),
    Source("shape-rnn-on-4d", net("y, h = x -> rnn(8)\noutput y"), ("rnn",), "rnn(8)"),
    Source("shape-linear-on-bool", net("y = m -> linear(4)\noutput y", inputs="input m: bool[N, 4]"), ("bool",), "linear(4)"),
    Source("shape-sdpa-mask-float", net("y = scaled_dot_product_attention(q, q, q, m)\noutput y",
                                        inputs="input q: f32[N, 2, 4, 8], m: i64[N, 1, 4, 4]"), ("mask",),
           "scaled_dot_product_attention(q, q, q, m)"),
    # results
    Source("results-two-names-one-result", net("a, b = x -> relu\noutput a"), ("2",), "a, b"),
    Source("results-one-name-two-results", net("a = x -> chunk(2, dim=1)\noutput a"), ("2",), "a"),
    Source("results-three-for-two", net("a, b, c = x -> chunk(2, dim=1)\noutput a"), ("3",), "a, b, c"),
    Source("results-chain-after-multi", net("y = x -> chunk(2, dim=1) -> relu\noutput y"), ("2 results",), "chunk(2, dim=1)"),
    # numbers
    Source("number-int-beyond-int64", net("y = x -> linear(100000000000000000000)\noutput y"), ("64-bit",), "100000000000000000000"),
    Source("number-float-overflow", net("y = x -> leaky_relu(1e999)\noutput y"), ("finite",), "1e999"),
    Source("number-huge-product", net("y = x -> dropout(p=" + "9" * 3000 + "*" + "9" * 3000 + ")\noutput y"),
           ("too large",), "9" * 10),
    Source("number-division-by-zero", net("y = x -> linear(4 // 0)\noutput y"), ("zero",), "4 // 0"),
    Source("number-float-division-by-zero", net("y = x -> leaky_relu(1 / 0)\noutput y"), ("zero",), "1 / 0"),
    Source("number-nan-attribute", net("y = x -> elu(alpha=1e999 - 1e999)\noutput y"), ("finite",), "alpha="),
    Source("number-string-size", net('y = x -> linear("4")\noutput y'), ("integer",), '"4"'),
    Source("number-bool-size", net("y = x -> linear(true)\noutput y"), ("integer",), "true"),
    # parameters
    Source("param-bad-init-args", net("param w: [4] = normal(1, 2, 3)\noutput x"), ("normal",), "normal(1, 2, 3)"),
    Source("param-zero-dim", net("param w: [0, 4]\noutput x"), ("0",), "0"),
    Source("param-negative-dim", net("param w: [4 - 8]\noutput x"), ("-4",), "4 - 8"),
    Source("param-non-finite-std", net("param w: [4] = normal(std=1e999)\noutput x"), ("positive number", "inf"), "1e999"),
    Source("param-init-not-a-call", net("param w: [4] = 3\noutput x"), ("by name",), "3\n"),
    Source("param-twice", net("param w: [4]\nparam w: [4]\noutput x"), ("`w` is already defined",), "w: [4]", nth=2),
    # imports
    Source("import-missing-file", 'import "nope.net"\n' + net("output x"), ("nope.net",), '"nope.net"'),
    Source("import-missing-module", "import transfomer\n" + net("output x"), ("transfomer", "transformer"), "transfomer"),
    Source("import-cycle", 'import "a.net"\n' + net("output x"), ("cycle",), '"a.net"', where="b.net",
           imports={"a.net": 'import "b.net"\n', "b.net": 'import "a.net"\n'}),
    Source("import-block-twice", 'import "a.net"\nblock b() {\n    input x\n    output x\n}\n' + net("output x"),
           ("defined twice",), "b()", imports={"a.net": "block b() {\n    input x\n    output x\n}\n"}),
    Source("import-syntax-error-inside", 'import "a.net"\n' + net("output x"), ("unexpected",), "{", where="a.net",
           imports={"a.net": "block b( {\n}\n"}),
    Source("import-chain-too-deep", 'import "m0.net"\n' + net("output x"), ("deep",), None, imports=_import_chain(70)),
    Source("import-latin1-inside", 'import "a.net"\n' + net("output x"), ("UTF-8",), None,
           imports={"a.net": b"# caf\xe9\n"}),
]


# --- the command line ----------------------------------------------------------------------------------

def _npy(array) -> Callable[[Any], None]:
    return lambda path: np.save(path, array, allow_pickle=False)


def _bytes(data: bytes) -> Callable[[Any], None]:
    return lambda path: path.write_bytes(data)


def _safetensors(tensors: dict[str, np.ndarray]) -> Callable[[Any], None]:
    def write(path):
        from safetensors.numpy import save_file

        save_file(tensors, str(path))
    return write


def _small_weights(**changes) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    weights = {"c1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
               "c1.bias": np.zeros(4, np.float32), "fc.weight": rng.standard_normal((5, 4)).astype(np.float32),
               "fc.bias": np.zeros(5, np.float32)}
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            weights.pop(key)
        else:
            weights[key] = value
    return weights


def _huge_npy_header(path) -> None:
    import numpy.lib.format as fmt

    with open(path, "wb") as f:
        fmt.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1, 3, 100000, 40000)})


IN = "{dir}/in.npy"
W = "{dir}/w.safetensors"

CLIS: list[Cli] = [
    # --dims
    Cli("dims-zero", ("show", "{model}", "--dims", "N=0"), ("at least 1",)),
    Cli("dims-negative", ("show", "{model}", "--dims", "N=-1"), ("at least 1",)),
    Cli("dims-word", ("show", "{model}", "--dims", "N=x"), ("whole number",)),
    Cli("dims-no-equals", ("show", "{model}", "--dims", "N"), ("NAME=SIZE",)),
    Cli("dims-no-name", ("show", "{model}", "--dims", "=3"), ("NAME=SIZE",)),
    Cli("dims-twice", ("show", "{model}", "--dims", "N=1,N=2"), ("twice",)),
    Cli("dims-unknown", ("show", "{model}", "--dims", "Q=3"), ("`Q`", "no input")),
    Cli("dims-typo", ("show", "{model}", "--dims", "HH=3"), ("`HH`", "`H`")),
    Cli("dims-beyond-int64", ("show", "{model}", "--dims", "H=99999999999999999999"), ("64-bit",)),
    Cli("dims-superscript", ("show", "{model}", "--dims", "N=\u00b2"), ("digits",)),
    Cli("dims-too-small-for-conv", ("show", "{model}", "--dims", "H=2,W=2"), ("empty output",), at="conv2d(4, 3)"),
    Cli("dims-missing-size", ("show", "{model}"), ("`H`", "no size"), model=net("output x", inputs="input x: f32[N, H]"),
        at="H"),
    Cli("dims-huge-run", ("run", "{model}", "--dims", "N=99999999999"), ("memory budget",)),
    # --seed and --memory-budget
    Cli("seed-negative", ("run", "{model}", "--seed", "-1"), ("seed",)),
    Cli("seed-fraction", ("run", "{model}", "--seed", "1.5"), ("seed",)),
    Cli("seed-word", ("init", "{model}", "-o", W, "--seed", "abc"), ("seed",)),
    Cli("seed-beyond-int64", ("run", "{model}", "--seed", "99999999999999999999"), ("seed",)),
    Cli("budget-unit", ("run", "{model}", "--memory-budget", "12Q"), ("amount of memory",)),
    Cli("budget-negative", ("run", "{model}", "--memory-budget", "-5"), ("amount of memory",)),
    Cli("budget-too-small", ("run", "{model}", "--memory-budget", "1K"), ("bytes",)),
    Cli("budget-init-too-small", ("init", "{model}", "-o", W, "--memory-budget", "100"), ("bytes",)),
    # choices the parser checks (argparse: exit 2 with usage)
    Cli("dtype-run-unknown", ("run", "{model}", "--dtype", "f16"), ("invalid choice",)),
    Cli("dtype-check-unknown", ("check", "{model}", "--dtype", "fp8"), ("invalid choice",)),
    Cli("command-unknown", ("shwo", "{model}"), ("invalid choice",)),
    Cli("command-missing-model", ("show",), ("required",)),
    Cli("dtype-run-half", ("run", "{model}", "--dtype", "half"), ("fp32 or fp64",)),
    Cli("dtype-check-fp64", ("check", "{model}", "--dtype", "float64"), ("fp32, fp16 or bf16",)),
    Cli("show-json-without-cost", ("show", "{model}", "--json"), ("--cost",)),
    Cli("compile-output-no-parent", ("compile", "{model}", "-o", "{dir}/nope/build"), ("no directory",)),
    Cli("compile-output-is-file", ("compile", "{model}", "-o", "{dir}/f"), ("is a file",),
        files={"f": lambda p: p.write_text("x")}),
    # pipelines, networks, targets
    Cli("pipeline-unknown-level", ("show", "{model}", "--pipeline", "O9"), ("O9",)),
    Cli("pipeline-unknown-pass", ("show", "{model}", "--pipeline", "fuse_nothing"), ("fuse_nothing",)),
    Cli("dump-after-unknown", ("show", "{model}", "--pipeline", "O1", "--dump-after", "nosuchpass"), ("nosuchpass",)),
    Cli("network-unknown", ("show", "{model}", "--network", "nope"), ("nope",)),
    Cli("network-ambiguous", ("show", "{model}"), ("--network",),
        model="network a {\n    input x: f32[N, 4]\n    output x\n}\nnetwork b {\n    input x: f32[N, 4]\n    output x\n}\n"),
    Cli("target-old-gpu", ("compile", "{model}", "--target", "sm_70"), ("sm_70",)),
    Cli("target-not-cuda", ("compile", "{model}", "--target", "gfx90a"), ("gfx90a",)),
    Cli("model-missing", ("show", "{dir}/nope.net"), ("cannot read",)),
    Cli("model-is-directory", ("show", "{dir}"), ("cannot read",)),
    # input files
    Cli("input-missing", ("run", "{model}", "--input", "{dir}/nope.npy"), ("nope.npy",)),
    Cli("input-wrong-shape", ("run", "{model}", "--input", IN), ("shape",), files={"in.npy": _npy(np.zeros((1, 5, 8, 8), np.float32))}),
    Cli("input-wrong-rank", ("run", "{model}", "--input", IN), ("shape",), files={"in.npy": _npy(np.zeros((3, 8, 8), np.float32))}),
    Cli("input-complex", ("run", "{model}", "--input", IN), ("complex",), files={"in.npy": _npy(np.zeros((1, 3, 8, 8), np.complex64))}),
    Cli("input-strings", ("run", "{model}", "--input", IN), ("input",), files={"in.npy": _npy(np.array(["a", "b"]))}),
    Cli("input-structured", ("run", "{model}", "--input", IN), ("input",),
        files={"in.npy": _npy(np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")]))}),
    Cli("input-empty-file", ("run", "{model}", "--input", IN), ("in.npy",), files={"in.npy": _bytes(b"")}),
    Cli("input-truncated", ("run", "{model}", "--input", IN), ("in.npy",), files={"in.npy": _bytes(b"\x93NUMPY\x01\x00v\x00{'descr'")}),
    Cli("input-not-npy", ("run", "{model}", "--input", IN), ("in.npy",), files={"in.npy": _bytes(b"hello world\n")}),
    Cli("input-pickled-objects", ("run", "{model}", "--input", IN), ("input",),
        files={"in.npy": _bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"
                                + b" " * 45 + b"\n" + b"\x80\x04N.")}),
    Cli("input-huge-header", ("run", "{model}", "--input", IN), ("memory budget",), files={"in.npy": _huge_npy_header}),
    Cli("input-empty-array", ("run", "{model}", "--input", IN), ("empty",), files={"in.npy": _npy(np.zeros((0, 3, 8, 8), np.float32))}),
    Cli("input-too-many", ("run", "{model}", "--input", IN, "--input", IN), ("takes 1 input",),
        files={"in.npy": _npy(np.zeros((1, 3, 8, 8), np.float32))}),
    Cli("input-is-directory", ("run", "{model}", "--input", "{dir}"), ("input",)),
    Cli("input-bool-for-float", ("run", "{model}", "--input", IN), ("bool",), files={"in.npy": _npy(np.zeros((1, 3, 8, 8), bool))}),
    # weight files
    Cli("weights-missing-file", ("run", "{model}", "--weights", "{dir}/nope.safetensors"), ("nope.safetensors",)),
    Cli("weights-missing-tensor", ("run", "{model}", "--weights", W), ("missing", "fc.bias"),
        files={"w.safetensors": _safetensors(_small_weights(fc__bias=None))}),
    Cli("weights-extra-tensor", ("run", "{model}", "--weights", W), ("unexpected", "fc.gamma"),
        files={"w.safetensors": _safetensors(_small_weights(fc__gamma=np.zeros(5, np.float32)))}),
    Cli("weights-renamed", ("run", "{model}", "--weights", W), ("c1.weight",),
        files={"w.safetensors": _safetensors({("conv1.weight" if k == "c1.weight" else k): v
                                              for k, v in _small_weights().items()})}),
    Cli("weights-wrong-shape", ("run", "{model}", "--weights", W), ("shape", "fc.weight"),
        files={"w.safetensors": _safetensors(_small_weights(fc__weight=np.zeros((4, 5), np.float32)))}),
    Cli("weights-integer", ("run", "{model}", "--weights", W), ("fc.bias",),
        files={"w.safetensors": _safetensors(_small_weights(fc__bias=np.zeros(5, np.int32)))}),
    Cli("weights-pickle-suffix", ("run", "{model}", "--weights", "{dir}/w.pth"), ("safetensors",),
        files={"w.pth": _bytes(b"\x80\x04N.")}),
    Cli("weights-corrupt-header", ("run", "{model}", "--weights", W), ("w.safetensors",),
        files={"w.safetensors": _bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")}),
    Cli("weights-huge-header-length", ("run", "{model}", "--weights", W), ("w.safetensors",),
        files={"w.safetensors": _bytes(b"\xff" * 8 + b"{}")}),
    Cli("weights-empty-file", ("run", "{model}", "--weights", W), ("w.safetensors",), files={"w.safetensors": _bytes(b"")}),
    Cli("weights-npz-pickled", ("run", "{model}", "--weights", "{dir}/w.npz"), ("w.npz",),
        files={"w.npz": lambda p: np.savez(p, a=np.array([object()], dtype=object))}),
    Cli("weights-nan", ("run", "{model}", "--weights", W), ("NaN", "fc.bias"),
        files={"w.safetensors": _safetensors(_small_weights(fc__bias=np.full(5, np.nan, np.float32)))}),
    Cli("weights-check-with-random", ("check", "{model}", "--weights", W, "--random-weights"), ("--random-weights",),
        files={"w.safetensors": _safetensors(_small_weights())}),
    # outputs
    Cli("output-onto-directory", ("init", "{model}", "-o", "{dir}"), ("directory",)),
    Cli("output-missing-folder", ("init", "{model}", "-o", "{dir}/no/w.safetensors"), ("no",)),
    Cli("output-bad-suffix", ("init", "{model}", "-o", "{dir}/w.pt"), ("safetensors",)),
    Cli("output-run-bad-suffix", ("run", "{model}", "--output", "{dir}/y.txt"), (".npy",)),
    Cli("output-npy-for-two", ("run", "{model}", "--output", "{dir}/y.npy"), ("npz",), model=TWO_OUT),
]


# --- the Python API ------------------------------------------------------------------------------------

def _graph(text: str = SMALL):
    from netdsl.frontend import load_source

    return load_source(text, "small.net")


def _ref(inputs=None, weights=None, **kw):
    from netdsl.backends import reference
    from netdsl.params import init_weights

    graph = _graph()
    x = np.zeros((1, 3, 8, 8), np.float32) if inputs is None else inputs
    return reference.run(graph, x, init_weights(graph) if weights is None else weights, **kw)


def _load_missing(tmp):
    from netdsl.frontend import load

    return load(tmp / "nope.net")


def _compile(**kw):
    import netdsl

    return netdsl.compile(_graph(), **kw)


def _pipeline(name):
    from netdsl.passes import run_pipeline

    return run_pipeline(_graph(), name)


def _concrete(text):
    from netdsl.ir.sizes import concrete_dims, parse_dims

    return concrete_dims(_graph(), parse_dims(text))


def _save(tmp, name):
    from netdsl.params import save_weights

    return save_weights(tmp / name, {"a": np.zeros(2, np.float32)})


APIS: list[Api] = [
    Api("api-load-missing", _load_missing, ("cannot read",)),
    Api("api-load-source-int", lambda tmp: _graph(123), ("str",)),
    Api("api-load-source-bad-bytes", lambda tmp: _graph(b"network n {\xff}"), ("UTF-8",)),
    Api("api-reference-dtype", lambda tmp: _ref(dtype="f16"), ("f16",)),
    Api("api-reference-input-shape", lambda tmp: _ref(inputs=np.zeros((1, 3, 8), np.float32)), ("shape",)),
    Api("api-reference-input-name", lambda tmp: _ref(inputs={"q": np.zeros((1, 3, 8, 8), np.float32)}), ("`q`",)),
    Api("api-reference-too-many-inputs", lambda tmp: _ref(inputs=[np.zeros((1, 3, 8, 8), np.float32)] * 2), ("1",)),
    Api("api-reference-weights-missing", lambda tmp: _ref(weights=_small_weights(fc__bias=None)), ("fc.bias",)),
    Api("api-reference-weights-shape", lambda tmp: _ref(weights=_small_weights(fc__bias=np.zeros(6, np.float32))), ("fc.bias",)),
    Api("api-reference-empty-input", lambda tmp: _ref(inputs=np.zeros((0, 3, 8, 8), np.float32)), ("empty",)),
    Api("api-compile-backend", lambda tmp: _compile(backend="cuda9"), ("cuda9",)),
    Api("api-compile-dtype", lambda tmp: _compile(dtype="fp8"), ("fp8",)),
    Api("api-pipeline-unknown", lambda tmp: _pipeline("O7"), ("O7",)),
    Api("api-dims-unknown", lambda tmp: _concrete("T=4"), ("`T`",)),
    Api("api-dims-zero", lambda tmp: _concrete("H=0"), ("at least 1",)),
    Api("api-save-onto-directory", lambda tmp: _save(tmp, "."), ("directory",)),
    Api("api-save-bad-suffix", lambda tmp: _save(tmp, "w.bin"), ("safetensors",)),
]


def catalogue() -> list[Source | Cli | Api]:
    return attribute_entries() + SOURCES + CLIS + APIS
