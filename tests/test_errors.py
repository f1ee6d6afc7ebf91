"""Every kind of user mistake is one NetDSLError with file:line:col, the source line, a caret under
the offending span, a hint where one helps, and notes for block call sites. Also: weights files, run-time
input shapes, the CLI (exit 2, no traceback), and a fuzz test: mutated programs give a graph or a
NetDSLError, never any other exception."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netdsl
from netdsl import NetDSLError
from netdsl.cli import main
from netdsl.ops.verify import verify

HEAD = "network n {\n    input x: f32[N, 3, 8, 8]\n"  # lines 1-2 of most programs below


def net(*lines: str) -> str:
    """A network over x: f32[N, 3, 8, 8]; ``lines`` start on line 3."""
    return HEAD + "".join(f"    {line}\n" for line in lines) + "}\n"


def error_of(source: str, **kw) -> NetDSLError:
    with pytest.raises(NetDSLError) as info:
        netdsl.load_source(source, "m.net", **kw)
    return info.value


def check(err: NetDSLError, message: str, line: int, col: int, hint: str | None = None, width: int | None = None):
    """``message`` (a substring) at m.net:line:col, with the source line, a caret there and ``hint``."""
    text = str(err)
    assert message in err.message, text
    assert err.loc is not None and (err.loc.line, err.loc.col) == (line, col), text
    head, source_line, caret = text.splitlines()[:3]
    assert head == f"m.net:{line}:{col}: error: {err.message}", text
    assert source_line == f"{line:>5} | {err.loc.source.splitlines()[line - 1]}", text
    assert re.fullmatch(r" {6}\| " + " " * (col - 1) + r"\^+", caret), text
    if width is not None:
        assert caret.count("^") == width, text
    if hint is not None:
        assert err.hint and hint in err.hint, text
        assert f"hint: {err.hint}" in text
    return err


def note_at(err: NetDSLError, message: str, line: int, col: int) -> None:
    at = [(m, (loc.line, loc.col)) for m, loc in err.notes if loc is not None]
    assert any(message in m and where == (line, col) for m, where in at), str(err)
    assert f"at m.net:{line}:{col}" in str(err)


# ---------------------------------------------------------------------------------------------
# syntax errors
# ---------------------------------------------------------------------------------------------

def test_syntax_missing_arrow_points_at_the_name_after_which_it_is_missing():
    err = error_of(net("y = x -> relu tanh", "output y"))
    check(err, "unexpected `tanh`", 3, 19, "missing `->` before `tanh`?", width=4)


def test_syntax_missing_arrow_inside_a_group():
    check(error_of(net("y = x -> (relu tanh)", "output y")), "unexpected `tanh`", 3, 20, "missing `->` before `tanh`")


def test_syntax_statement_that_is_not_an_assignment():
    check(error_of(net("x -> relu", "output x")), "unexpected `->`", 3, 7, "a statement is `name = expression`")


def test_syntax_unclosed_brace_points_at_the_end_and_notes_the_brace():
    err = error_of(HEAD + "    output x -> relu\n")
    check(err, "unexpected end of file", 3, 21, "is a `}` missing?")
    note_at(err, "`{` opened here is not closed", 1, 11)


def test_syntax_unclosed_paren_before_the_next_statement():
    err = error_of(net("y = x -> conv2d(4, 3", "output y"))
    check(err, "unexpected `output`", 4, 5, "is a `)` missing?")
    assert "`output` is a keyword" in err.hint
    note_at(err, "`(` opened here is not closed", 3, 20)


def test_syntax_unmatched_and_mismatched_closers():
    check(error_of(net("y = x -> conv2d(4, 3))", "output y")), "unmatched `)`", 3, 26, "no `(` is open here")
    err = error_of(net("y = x -> conv2d(4, 3]", "output y"))
    check(err, "unmatched `]`", 3, 25, "no `[` is open here; the open `(` is closed with `)`")
    note_at(err, "`(` opened here", 3, 20)
    err = error_of("network n {\n    input x: f32[N, 3)\n    output x\n}\n")
    check(err, "unmatched `)`", 2, 22, "the open `[` is closed with `]`")
    note_at(err, "`[` opened here", 2, 17)
    check(error_of(net("output x") + "}\n"), "unmatched `}`", 5, 1)


def test_syntax_bad_characters():
    check(error_of(net("y = x -> relu $", "output y")), "unexpected character `$`", 3, 19, "names are letters")
    check(error_of(net("y = x > relu", "output y")), "unexpected character `>`", 3, 11, "chains are written with `->`")
    check(error_of(net("y = x -> relu;", "output y")), "unexpected character `;`", 3, 18, "line breaks")
    check(error_of(net('y = x -> gelu(approximate="tanh)', "output y")), 'unexpected character `"`', 3, 31,
          "a string ends on the line")


def test_syntax_unexpected_keyword():
    err = check(error_of(net("y = network", "output y")), "unexpected `network`", 3, 9, "`network` is a keyword")
    err = check(error_of(net("input = x -> relu", "output x")), "unexpected `=`", 3, 11)
    err = check(error_of(net("block b(c) {", "}", "output x")), "unexpected `block`", 3, 5,
                "defined at the top level of the file")
    note_at(err, "`{` opened here is not closed", 1, 11)
    check(error_of(net("output x -> relu -> output")), "unexpected `output`", 3, 25, "`output` is a keyword")


def test_syntax_end_of_file():
    err = check(error_of(HEAD + "    y = x ->"), "unexpected end of file", 3, 13, "expected `(`, a name")
    note_at(err, "`{` opened here is not closed", 1, 11)
    check(error_of("network"), "unexpected end of file", 1, 8, "expected a name")


def test_syntax_error_in_a_file_with_comments_and_blank_lines():
    src = "# a comment with ( and {\n\nnetwork n {  # another }\n    input x: f32[4]\n    output x -> relu relu\n}\n"
    check(error_of(src), "unexpected `relu`", 5, 22, "missing `->` before `relu`")


# ---------------------------------------------------------------------------------------------
# layers and attributes
# ---------------------------------------------------------------------------------------------

def test_unknown_layer_did_you_mean():
    check(error_of(net("output x -> conv2 (4, 3)")), "unknown layer `conv2`", 3, 17, "did you mean `conv2d`?", width=5)


def test_unknown_activation_did_you_mean():
    check(error_of(net("output x -> rleu")), "unknown layer `rleu`", 3, 17, "did you mean `relu`?")
    check(error_of(net("output x -> gleu")), "unknown layer `gleu`", 3, 17, "did you mean `gelu`?")
    check(error_of(net("output x -> leakyrelu(0.1)")), "unknown layer `leakyrelu`", 3, 17, "`leaky_relu`")


def test_unknown_layer_without_a_close_match_points_to_the_docs():
    check(error_of(net("output x -> zzz")), "unknown layer `zzz`", 3, 17, "docs/language.md")


def test_fused_ops_are_not_layers_of_the_language():
    check(error_of(net('output x -> fused_conv2d(4, 3, act1="relu")')), "made by the compiler's fusion passes", 3, 17,
          "conv2d(...) -> batchnorm -> relu")


def test_unknown_attribute_did_you_mean_points_at_the_argument():
    check(error_of(net("output x -> conv2d(4, 3, strid=2)")), "`conv2d` has no attribute `strid`", 3, 30,
          "did you mean `stride`?", width=7)


def test_missing_required_attribute():
    check(error_of(net("output x -> conv2d(4)")), "`conv2d` needs attribute `kernel_size`", 3, 17,
          "usage: conv2d(out_channels, kernel_size, stride=1")


def test_badly_typed_attributes_point_at_the_argument():
    check(error_of(net('output x -> conv2d(4, kernel_size="3")')),
          'attribute `kernel_size` must be an integer or a pair of integers, got "3"', 3, 27, "kernel size")
    check(error_of(net('output x -> conv2d(4, "3")')), "attribute `kernel_size` must be", 3, 27)
    check(error_of(net("output x -> conv2d(4, 3, bias=1)")), "attribute `bias` must be true or false, got 1", 3, 30,
          width=6)
    check(error_of(net("output x -> conv2d(4.5, 3)")), "attribute `out_channels` must be an integer, got 4.5", 3, 24)
    check(error_of(net("output x -> conv2d(4, 0)")), "attribute `kernel_size` must be positive", 3, 27)
    check(error_of(net("output x -> conv2d(4, (1, 2, 3))")), "got (1, 2, 3)", 3, 27)
    check(error_of(net('output x -> conv2d(4, 3, padding="full")')), 'must be an integer, a pair, "same" or "valid"',
          3, 30)
    check(error_of(net('output x -> gelu(approximate="fast")')), 'must be one of "none", "tanh", got "fast"', 3, 22)
    check(error_of(net("output x -> leaky_relu(alpha=true)")), "attribute `alpha` must be a number, got true", 3, 28)


def test_too_many_attribute_arguments():
    check(error_of(net("output x -> relu(1)")), "`relu` takes no attribute arguments, got 1", 3, 22, "usage: relu()")
    check(error_of(net("output x -> dropout(0.1, 0.2)")), "`dropout` takes at most 1 attribute argument(s), got 2",
          3, 30, "usage: dropout(p=0.5)")


def test_attribute_given_twice():
    check(error_of(net("output x -> conv2d(4, 3, out_channels=2)")), "`out_channels` of `conv2d` is given twice",
          3, 30)
    err = check(error_of(net("output x -> conv2d(4, 3, stride=1, stride=2)")), "argument `stride` is given twice",
                3, 40)
    note_at(err, "first given", 3, 30)


def test_wrong_arity():
    check(error_of(net("output add(x)")), "`add` takes 2 tensor input(s), got 1", 3, 12, "`add(a, b)` or `a + b`")
    check(error_of(net("output x -> add(x, x)")), "got 3 (including the one from `->`)", 3, 17)
    check(error_of(net("output x -> relu(x)")), "`relu` takes 1 tensor input(s), got 2", 3, 17)
    check(error_of(net("output relu()")), "`relu` needs an input tensor", 3, 12, "`x -> relu`")


def test_concat_takes_any_number_of_inputs():
    for k in (1, 2, 5):
        graph = netdsl.load_source(net(f"output concat({', '.join(['x'] * k)})"))
        assert graph.outputs[0].type.shape[1] == 3 * k


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------

def test_undefined_name_did_you_mean():
    check(error_of(net("feat = x -> relu", "output fet -> tanh")), "undefined name `fet`", 4, 12,
          "did you mean `feat`?")


def test_redefined_name_notes_the_first_definition():
    err = check(error_of(net("y = x -> relu", "y = x -> tanh", "output y")), "`y` is already defined", 4, 5,
                "each name is assigned once")
    note_at(err, "previous definition", 3, 5)
    err = check(error_of(net("x = x -> relu", "output x")), "`x` is already defined", 3, 5)
    note_at(err, "previous definition", 2, 11)


def test_a_layer_is_not_a_value():
    check(error_of(net("output relu")), "`relu` is a layer, not a value", 3, 12, "`x -> relu`")


def test_cycle():
    check(error_of(net("a = b -> relu", "b = a -> relu", "output a")), "cycle: b -> a -> b", 3, 9, "acyclic")
    check(error_of(net("a = a -> relu", "output a")), "cycle: a -> a", 3, 9)


def test_use_before_definition():
    check(error_of(net("a = b -> relu", "b = x -> relu", "output a")), "`b` is used before it is defined (on line 4)",
          3, 9, "define values before using them")


def test_unused_input():
    src = "network n {\n    input x: f32[N, 3, 8, 8], unused: f32[N, 3]\n    output x -> relu\n}\n"
    check(error_of(src), "input `unused` is never used", 2, 31, "use it or remove it")


def test_unused_input_of_a_block():
    src = ("block b(c) {\n    input x, y\n    output x -> relu\n}\n"
           "network n {\n    input x: f32[N, 3, 8, 8]\n    output b(x, x, 4)\n}\n")
    err = check(error_of(src), "input `y` is never used", 2, 14)
    note_at(err, "in block `b`, instantiated", 7, 12)


def test_duplicate_label():
    err = check(error_of(net("output x -> a: relu -> a: tanh")), "label `a` is used twice in the same scope", 3, 31,
                "give each layer its own label")
    note_at(err, "first used here", 3, 20)


def test_duplicate_output_name():
    check(error_of(net("output y = x, y = x -> relu")), "output `y` is declared twice", 3, 19)


def test_duplicate_definitions_of_blocks_and_parameters():
    src = "block b(c) {\n    input x\n    output x\n}\nblock b(c) {\n    input x\n    output x\n}\n" + net("output x")
    err = check(error_of(src), "`b` is defined twice", 5, 7, "must be unique")
    note_at(err, "first defined", 1, 7)
    check(error_of("block b(c, c) {\n    input x\n    output x\n}\n" + net("output x")),
          "block `b` has two parameters named `c`", 1, 12)


# ---------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------

def test_conv_channels_not_divisible_by_groups():
    check(error_of(net("output x -> conv2d(4, 3, groups=2)")), "conv2d input has 3 channels, not divisible by groups=2",
          3, 17, "groups must divide both the input channels and out_channels")
    check(error_of(net("output x -> conv2d(4, 3, groups=3)")), "out_channels=4 is not divisible by groups=3", 3, 17)


def test_residual_add_of_different_shapes():
    err = check(error_of(net("y = x -> conv2d(4, 3)", "output y + x")), "`add` of tensors whose shapes differ in dim 1",
                4, 12, "a residual needs both branches to have the same shape")
    assert "f32[N, 4, 6, 6] and f32[N, 3, 8, 8]" in err.message


def test_concat_with_different_spatial_dims():
    check(error_of(net("y = x -> maxpool(2)", "output concat(x, y)")),
          "concat inputs must agree except in dim 1: input 1 is f32[N, 3, 8, 8], input 2 is f32[N, 3, 4, 4]", 4, 12)


def test_linear_on_a_symbolic_feature_dim():
    src = "network n {\n    input x: f32[N, F]\n    output x -> fc: linear(10)\n}\n"
    check(error_of(src), "the feature dimension of a linear input must be a static size, but it is `F`", 3, 21,
          "fixed size")


def test_window_larger_than_the_input():
    check(error_of(net("output x -> conv2d(4, 9)")), "height of size 8 (padded to 8) is smaller than the window 9",
          3, 17, "the input is too small here")
    check(error_of(net("output x -> conv2d(4, 5, dilation=3, padding=1)")), "smaller than the window 13", 3, 17)
    check(error_of(net("output x -> maxpool(2) -> maxpool(2) -> maxpool(2) -> maxpool(2)")), "smaller than the window",
          3, 59)


def test_other_shape_errors():
    check(error_of("network n {\n    input x: f32[N, 3]\n    output x -> conv2d(4, 3)\n}\n"),
          "`conv2d` expects a rank-4 input [N, C, H, W], got f32[N, 3]", 3, 17)
    check(error_of(net("output x -> maxpool(2, padding=2)")), "must be smaller than the kernel size", 3, 17)
    check(error_of(net("output x -> softmax(dim=4)")), "dim=4 is out of range", 3, 17)
    check(error_of(net("output x -> groupnorm(2)")), "3 channels are not divisible into 2 groups", 3, 17)
    check(error_of("network n {\n    input x: f32[N, 3], y: f64[N, 3]\n    output x + y\n}\n"),
          "`add` mixes element types f32, f64", 3, 12)


def test_conv_transpose2d_output_padding_must_be_smaller_than_stride_or_dilation():
    check(error_of(net("output x -> conv_transpose2d(4, 3, stride=2, output_padding=2)")),
          "conv_transpose2d output_padding=(2, 2) must be smaller than either stride=(2, 2) or dilation=(1, 1)",
          3, 17, "it is at most stride - 1", width=len("conv_transpose2d(4, 3, stride=2, output_padding=2)"))
    check(error_of(net("output x -> conv_transpose2d(4, 3, output_padding=(0, 1))")),
          "output_padding=(0, 1) must be smaller than either stride=(1, 1) or dilation=(1, 1)", 3, 17)
    # negative values are caught when the attribute is bound, at the argument
    check(error_of(net("output x -> conv_transpose2d(4, 3, output_padding=-1)")),
          "attribute `output_padding` must not be negative, got (-1, -1)", 3, 40)


def test_conv_transpose2d_channels_not_divisible_by_groups():
    check(error_of(net("output x -> conv_transpose2d(4, 2, stride=2, groups=2)")),
          "conv_transpose2d input has 3 channels, not divisible by groups=2", 3, 17,
          "groups must divide both the input channels and out_channels")
    check(error_of(net("output x -> conv_transpose2d(4, 2, groups=3)")),
          "conv_transpose2d out_channels=4 is not divisible by groups=3", 3, 17, "groups must divide both")


def test_conv_transpose2d_other_shape_errors():
    check(error_of(net("output x -> conv_transpose2d(4, 1, padding=5)")),
          "conv_transpose2d output height would be -2", 3, 17, "the padding is too large")
    check(error_of("network n {\n    input x: f32[N, 3]\n    output x -> conv_transpose2d(4, 2)\n}\n"),
          "`conv_transpose2d` expects a rank-4 input [N, C, H, W], got f32[N, 3]", 3, 17)
    check(error_of("network n {\n    input x: f32[N, C, 8, 8]\n    output x -> conv_transpose2d(4, 2)\n}\n"),
          "the channel dimension of a conv_transpose2d input must be a static size, but it is `C`", 3, 17,
          "fixed size")
    check(error_of(net("output x -> conv_transpose2d(4, 2, stride=0)")), "attribute `stride` must be positive", 3, 40)


def test_upsample_needs_exactly_one_of_scale_factor_and_size():
    check(error_of(net("output x -> upsample(scale_factor=2, size=16)")),
          "`upsample` takes scale_factor or size, not both", 3, 17, "give exactly one of scale_factor=s",
          width=len("upsample(scale_factor=2, size=16)"))
    check(error_of(net("output x -> upsample")), "`upsample` needs scale_factor or size", 3, 17,
          "give exactly one of scale_factor=s (or (sh, sw)) and size=n (or (h, w))")
    check(error_of(net('output x -> upsample(mode="bilinear")')), "`upsample` needs scale_factor or size", 3, 17)


def test_upsample_align_corners_only_with_bilinear():
    check(error_of(net("output x -> upsample(2, align_corners=true)")),
          'attribute `align_corners` can only be given with mode="bilinear", not mode="nearest"', 3, 17,
          'remove align_corners, or use mode="bilinear"')
    check(error_of(net('output x -> upsample(2, mode="nearest", align_corners=false)')),  # torch: any value
          "can only be given with mode=\"bilinear\"", 3, 17)


def test_upsample_unknown_mode():
    # the registry's `choices` check: at the argument, listing the modes (it gives no did-you-mean hint)
    check(error_of(net('output x -> upsample(2, mode="bilnear")')),
          'attribute `mode` must be one of "nearest", "bilinear", got "bilnear"', 3, 29, width=len('mode="bilnear"'))
    check(error_of(net('output x -> upsample(2, mode="bicubic")')), 'got "bicubic"', 3, 29)


def test_upsample_bad_scale_factor_or_size():
    check(error_of(net('output x -> upsample("2")')),
          'attribute `scale_factor` must be a number or a pair of numbers, got "2"', 3, 17, "scale_factor=1.5")
    check(error_of(net("output x -> upsample((2, 2, 2))")), "got (2, 2, 2)", 3, 17)
    check(error_of(net("output x -> upsample(scale_factor=(2, 0))")),
          "attribute `scale_factor` must be positive, got (2, 0)", 3, 17)
    check(error_of(net("output x -> upsample(0.1)")), "upsample output height would be 0 (floor(8 * 0.1))", 3, 17,
          "use a larger scale_factor")
    check(error_of(net("output x -> upsample(size=(4, 0))")), "attribute `size` must be positive, got (4, 0)", 3, 26)
    check(error_of(net("output x -> upsample(size=2.5)")), "attribute `size` must be an integer or a pair", 3, 26)
    src = "network n {\n    input x: f32[N, 3, H, W]\n    output x -> upsample(0.7)\n}\n"
    check(error_of(src), "upsample with scale_factor=0.7 needs a static height, but it is `H`", 3, 17,
          "a scale factor such as 2, 1.5 or 0.5")


def test_network_input_types():
    check(error_of("network n {\n    input x: f33[N, 3]\n    output x\n}\n"), "unknown element type `f33`", 2, 14,
          "did you mean `f32`?")
    check(error_of("network n {\n    input x: f32[N, 0]\n    output x\n}\n"), "a dimension must be at least 1", 2, 21)
    check(error_of("network n {\n    input x\n    output x\n}\n"), "network input `x` needs a type", 2, 11,
          "f32[N, 3, H, W]")
    err = check(error_of("network n {\n    input x: f32[N, H=8], y: f32[N, H=9]\n    output x + y\n}\n"),
                "dimension `H` is given two defaults (8 and 9)", 2, 37)
    note_at(err, "first default", 2, 21)


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------

BLOCK = "block unit(c, k=3) {\n    input x\n    output x -> conv2d(c, k) -> relu\n}\n"  # lines 1-4


def blocknet(*lines: str) -> str:
    """BLOCK, then a network over x: f32[N, 3, 8, 8] whose ``lines`` start on line 7."""
    return BLOCK + net(*lines)


def test_block_called_with_a_missing_parameter():
    check(error_of(blocknet("output x -> unit")), "block `unit` needs parameter `c`", 7, 17, "block unit(c, k)")


def test_block_called_with_an_extra_parameter():
    check(error_of(blocknet("output x -> unit(4, 3, 2)")), "block `unit` takes 2 parameter(s), got 3", 7, 28,
          "block unit(c, k)")


def test_block_called_with_a_wrong_parameter_name():
    check(error_of(blocknet("output x -> unit(4, kernel=3)")), "block `unit` has no parameter `kernel`", 7, 25,
          "block unit(c, k)")
    check(error_of(blocknet("output x -> unit(4, kk=3)")), "no parameter `kk`", 7, 25, "did you mean `k`?")
    check(error_of(blocknet("output x -> unit(4, c=3)")), "parameter `c` of block `unit` is given twice", 7, 25)


def test_block_called_with_too_many_tensors():
    check(error_of(blocknet("output x -> unit(x, 4)")), "block `unit` takes 1 input tensor(s) (x), got 2", 7, 17,
          "the value before `->` is the first input")


def test_block_with_several_outputs_in_an_expression():
    src = "block two(c) {\n    input x\n    output x, x -> relu\n}\n"
    check(error_of(src + net("output x -> two(1)")), "block `two` gives 2 results (x, output1); bind them", 7, 17)


def test_error_inside_a_block_points_inside_and_notes_the_call_site():
    err = check(error_of(blocknet("output x -> unit(4, k=9)")), "smaller than the window 9", 3, 17)
    note_at(err, "in block `unit`, instantiated", 7, 17)
    lines = str(err).splitlines()
    assert lines[-2] == "    7 |     output x -> unit(4, k=9)" and lines[-1].count("^") == len("unit(4, k=9)")


def test_error_in_nested_blocks_gives_a_note_per_level():
    src = (BLOCK + "block pair(c) {\n    input x\n    output x -> unit(c) -> unit(c, k=1) -> unit(c, k=11)\n}\n"
           + net("y = x -> stage: pair(6)", "output y"))
    err = check(error_of(src), "smaller than the window 11", 3, 17)
    assert [m for m, _ in err.notes] == ["in block `unit`, instantiated", "in block `pair`, instantiated"]
    note_at(err, "in block `unit`", 7, 44)
    note_at(err, "in block `pair`", 11, 21)


def test_error_in_a_block_parameter_default():
    src = "block b(c, k=c / 0) {\n    input x\n    output x -> conv2d(c, k)\n}\n" + net("output x -> b(4)")
    err = check(error_of(src), "division by zero", 1, 14)
    note_at(err, "in the default of parameter `k` of block `b`", 7, 17)


def test_recursive_block():
    src = "block r(c) {\n    input x\n    output x -> relu -> r(c)\n}\n" + net("output x -> r(3)")
    err = check(error_of(src), "block `r` calls itself (r -> r)", 3, 25, "blocks cannot be recursive")
    note_at(err, "in block `r`, instantiated", 7, 17)
    src = ("block a(c) {\n    input x\n    output x -> b(c)\n}\nblock b(c) {\n    input x\n    output x -> a(c)\n}\n"
           + net("output x -> a(3)"))
    check(error_of(src), "block `a` calls itself (a -> b -> a)", 7, 17)


def test_block_without_an_output():
    src = "block b(c) {\n    input x\n    y = x -> relu\n}\n" + net("output x -> b(4)")
    err = check(error_of(src), "this block has no output", 1, 7, "add `output <value>`")
    note_at(err, "in block `b`, instantiated", 7, 17)


# ---------------------------------------------------------------------------------------------
# networks, repetition, numbers and tensors
# ---------------------------------------------------------------------------------------------

def test_repetition_count_must_be_a_positive_integer():
    check(error_of(net("output x -> relu * 0")), "a repetition count must be a positive integer, got 0", 3, 24)
    check(error_of(net("output x -> relu * 1.5")), "got 1.5", 3, 24)
    check(error_of(net('output x -> relu * "2"')), 'got "2"', 3, 24)
    check(error_of(net("output x -> relu * x")), "got a tensor", 3, 24)
    check(error_of(net("output x -> g: (relu -> tanh) * (2 - 2)")), "got 0", 3, 38)
    check(error_of(net("output x -> relu * 100000")), "a repetition count must be at most 1000", 3, 24)


def test_runaway_nesting_of_repetitions_is_an_error_not_a_hang():
    check(error_of(net("output x -> ((relu * 1000) * 1000)")), "more than 100,000 layers", 3, 19, "repetition counts")


def test_no_network():
    check(error_of("# only a block\nblock b(c) {\n    input x\n    output x\n}\n"), "m.net defines no network", 1, 1,
          "add `network name")
    with pytest.raises(NetDSLError, match="defines no network"):
        netdsl.load_source("", "m.net")


def test_several_networks():
    src = net("output x") + net("output x -> relu").replace("network n", "network m")
    err = check(error_of(src), "m.net defines several networks: n, m", 5, 9, "--network NAME")
    note_at(err, "first network", 1, 9)
    assert netdsl.load_source(src, "m.net", network="m").name == "m"
    with pytest.raises(NetDSLError, match="no network `mm`") as info:
        netdsl.load_source(src, "m.net", network="mm")
    assert "did you mean `m`?" in str(info.value)


def test_network_without_an_output():
    check(error_of(net("y = x -> relu")), "this network has no output", 1, 9, "add `output <value>`")


def test_a_tensor_where_a_number_is_needed():
    check(error_of(net("output x -> conv2d(4, x)")), "`conv2d` got a tensor where it needs a number", 3, 27,
          "tensor arguments come first")
    check(error_of(net("output x -> conv2d(4, kernel_size=x)")), "argument `kernel_size` must be a number", 3, 39)
    check(error_of(net("output x -> conv2d((x, 1), 3)")), "a tuple holds numbers, not tensors", 3, 24)
    # a tensor and a number make an `affine` node (tests/test_language_sequence.py); a string does not
    check(error_of(net('output x + "a"')), '`+` between a tensor and "a" is not supported', 3, 12)
    check(error_of(net("output x -> conv2d(-true, 3)")), "unary `-` applies to numbers and tensors, not true", 3, 24)


def test_a_number_where_a_tensor_is_needed():
    check(error_of(net("output 3 -> relu")), "a chain starts from a tensor", 3, 12, "write `x -> layer`")
    check(error_of(net("output 3")), "an output must be a tensor", 3, 12)
    check(error_of(net("output add(x, 3)")), "`add` takes 2 tensor input(s), got 1", 3, 12)
    check(error_of(net("output relu(3)")), "`relu` needs an input tensor", 3, 12)


def test_arithmetic_on_attributes():
    check(error_of(net("output x -> conv2d(4 / 0, 3)")), "division by zero", 3, 24)
    check(error_of(net('output x -> conv2d("a" + 1, 3)')), '`+` needs numbers, got "a" and 1', 3, 24)
    check(error_of(net("output x -> conv2d(1.5 * " + "9" * 400 + ", 3)")), "the result of `*` is too large", 3, 24)
    check(error_of(net("output x -> conv2d(" + "9" * 5000 + ", 3)")), "this integer is too long", 3, 24)
    check(error_of(net("output x - x")), "`-` between tensors is not supported", 3, 12)


def test_load_a_missing_file():
    with pytest.raises(NetDSLError, match="cannot read"):
        netdsl.load("/nonexistent/model.net")


# ---------------------------------------------------------------------------------------------
# weights files and run-time inputs (no source position: these are not mistakes in a .net file)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lenet():
    from pathlib import Path

    graph = netdsl.load(Path(__file__).resolve().parent.parent / "examples" / "lenet5.net")
    return graph, netdsl.init_weights(graph)


def test_weights_missing_tensor(lenet, tmp_path):
    graph, w = lenet
    path = tmp_path / "w.safetensors"
    netdsl.save_weights(path, {k: v for k, v in w.items() if k != "c3.bias"})
    with pytest.raises(NetDSLError, match=r"missing tensor `c3.bias`") as info:
        netdsl.load_weights(path, graph)
    assert str(path) in info.value.message and "netdsl show" in info.value.hint


def test_weights_renamed_tensor_did_you_mean(lenet, tmp_path):
    graph, w = lenet
    path = tmp_path / "w.npz"
    netdsl.save_weights(path, {("c3.b" if k == "c3.bias" else k): v for k, v in w.items()})
    with pytest.raises(NetDSLError, match="missing tensor `c3.bias`") as info:
        netdsl.load_weights(path, graph)
    assert info.value.hint == "did you mean `c3.b`?"


def test_weights_extra_tensor(lenet, tmp_path):
    graph, w = lenet
    path = tmp_path / "w.safetensors"
    netdsl.save_weights(path, {**w, "c9.bias": w["c1.bias"]})
    with pytest.raises(NetDSLError, match="unexpected tensor `c9.bias`") as info:
        netdsl.load_weights(path, graph)
    assert "did you mean" in info.value.hint


def test_weights_wrong_shape_and_type(lenet, tmp_path):
    graph, w = lenet
    path = tmp_path / "w.safetensors"
    netdsl.save_weights(path, {**w, "f5.weight": np.zeros((120, 401), np.float32)})
    with pytest.raises(NetDSLError, match=r"tensor `f5.weight` has shape \(120, 401\), the model expects \(120, 400\)"):
        netdsl.load_weights(path, graph)
    netdsl.save_weights(path, {**w, "c1.bias": np.zeros(6, np.int32)})
    with pytest.raises(NetDSLError, match="element type int32, expected floating point"):
        netdsl.load_weights(path, graph)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_weights_corrupt_file(lenet, tmp_path, suffix):
    graph, w = lenet
    path = tmp_path / f"w{suffix}"
    netdsl.save_weights(path, w)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(NetDSLError, match="cannot read weights file") as info:
        netdsl.load_weights(path, graph)
    assert "valid .safetensors / .npz" in info.value.hint
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(NetDSLError, match="cannot read weights file"):
        netdsl.load_weights(path, graph)


def test_weights_unknown_suffix_or_missing_file(lenet, tmp_path):
    graph, w = lenet
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(NetDSLError, match="unknown format") as info:
        netdsl.load_weights(tmp_path / "w.pt", graph)
    assert ".safetensors or .npz" in info.value.hint
    with pytest.raises(NetDSLError, match="unknown format"):
        netdsl.save_weights(tmp_path / "w.pt", w)
    with pytest.raises(NetDSLError, match="does not exist"):
        netdsl.load_weights(tmp_path / "none.safetensors", graph)


def test_wrong_input_shapes_at_run_time(lenet):
    graph, w = lenet
    run = netdsl.reference.run
    with pytest.raises(NetDSLError, match=r"input `image` expects f32\[N, 1, 32, 32\], got an array of shape "
                                          r"\(2, 1, 28, 28\)"):
        run(graph, np.zeros((2, 1, 28, 28)), w)
    with pytest.raises(NetDSLError, match=r"got an array of shape \(1, 32, 32\)"):
        run(graph, np.zeros((1, 32, 32)), w)
    with pytest.raises(NetDSLError, match="takes 1 input"):
        run(graph, [np.zeros((1, 1, 32, 32))] * 2, w)
    with pytest.raises(NetDSLError, match="no value given for input `image`"):
        run(graph, {"img": np.zeros((1, 1, 32, 32))}, w)
    pair = netdsl.load_source("network p {\n    input a: f32[N, 4], b: f32[N, 4]\n    output a + b\n}\n")
    with pytest.raises(NetDSLError, match="dimension N is 2 elsewhere, got 3"):
        run(pair, {"a": np.zeros((2, 4)), "b": np.zeros((3, 4))}, {})


# ---------------------------------------------------------------------------------------------
# the command line: the error, no traceback, exit status 2
# ---------------------------------------------------------------------------------------------

BAD = net("output x -> rleu")


def test_cli_prints_the_error_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "bad.net"
    path.write_text(BAD)
    assert main(["show", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{path}:3:17: error: unknown layer `rleu`\n")
    assert "hint: did you mean `relu`?" in captured.err and "Traceback" not in captured.err
    for argv in (["run", str(path)], ["init", str(path), "-o", str(tmp_path / "w.safetensors")],
                 ["show", str(tmp_path / "missing.net")]):
        assert main(argv) == 2
        assert "error:" in capsys.readouterr().err


def test_cli_run_with_bad_weights_and_inputs(tmp_path, capsys):
    model = tmp_path / "m.net"
    model.write_text(net("output y = x -> c: conv2d(2, 3)"))
    (tmp_path / "w.npz").write_bytes(b"nope")
    assert main(["run", str(model), "--weights", str(tmp_path / "w.npz")]) == 2
    assert "cannot read weights file" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 7, 7), np.float32))
    assert main(["run", str(model), "--input", str(tmp_path / "x.npy")]) == 2
    assert "input `x` expects f32[N, 3, 8, 8]" in capsys.readouterr().err
    (tmp_path / "bad.npy").write_bytes(b"not npy")
    assert main(["run", str(model), "--input", str(tmp_path / "bad.npy")]) == 2
    assert "cannot read input" in capsys.readouterr().err
    assert main(["show", str(model), "--dims", "N=x"]) == 2
    assert "bad --dims entry `N=x`" in capsys.readouterr().err
    assert main(["init", str(model), "-o", str(tmp_path / "no" / "w.safetensors")]) == 2
    assert "there is no directory" in capsys.readouterr().err
    (tmp_path / "dir.npy").mkdir()
    assert main(["run", str(model), "--input", str(tmp_path / "dir.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read input") and "Traceback" not in err


def test_cli_subprocess_exit_status_and_stderr(tmp_path):
    path = tmp_path / "bad.net"
    path.write_text(BAD)
    proc = subprocess.run([sys.executable, "-m", "netdsl", "show", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[:3] == [
        f"{path}:3:17: error: unknown layer `rleu`",
        "    3 |     output x -> rleu",
        "      |                 ^^^^",
    ]


# ---------------------------------------------------------------------------------------------
# fuzz: a mutated program elaborates or fails with a NetDSLError, never another exception
# ---------------------------------------------------------------------------------------------

VALID = '''# a small residual network with most of the language in it
block basic(c, s=1, mid=c * 2) {
    input x
    y = x -> conv2d(mid, 3, stride=s, padding=1, bias=false) -> batchnorm -> relu
          -> conv2d(c, (3, 3), padding="same", bias=false) -> bn2: batchnorm
    output relu(y + x)
}

network tiny {
    input image: f32[N, 3, 16, 16], extra: f32[N, 8, 8, 8]
    stem = image -> conv1: conv2d(8, 3, stride=2, padding=1) -> leaky_relu(alpha=0.1)
    body = stem -> layer1: basic(8) * 2 -> g: (relu -> maxpool(3, stride=1, padding=1))
    gated = body * (stem -> sigmoid)
    both = concat(gated, extra -> tanh, dim=1) -> swish
    logits = both -> global_avgpool -> flatten -> dropout(0.5) -> fc: linear(10 - 2 / 2)
    output logits, probs = softmax(logits, dim=-1)
}
'''
TOKEN = re.compile(r'#[^\n]*|"[^"\n]*"|[A-Za-z_]\w*|\d+\.?\d*|->|\s+|.', re.S)
SPARE = ["(", ")", "{", "}", "[", "]", ",", ":", "=", "->", "*", "/", "+", "-", ".", "#", '"', "0", "7", "1.5",
         "x", "relu", "block", "network", "input", "output", "true", "\n", " ", "$", ";", "1" * 30]


@st.composite
def mutants(draw):
    tokens = TOKEN.findall(VALID)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(tokens) - 1))
        how = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "replace", "lines"]))
        if how == "delete":
            del tokens[i]
        elif how == "duplicate":
            tokens.insert(i, tokens[i])
        elif how == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif how in ("insert", "replace"):
            new = draw(st.sampled_from(SPARE) | st.sampled_from(tokens))
            tokens[i: i + (how == "replace")] = [new]
        else:  # duplicate or move a whole line
            lines = "".join(tokens).split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines.insert(b, lines[a] if draw(st.booleans()) else lines.pop(a))
            tokens = TOKEN.findall("\n".join(lines))
    return "".join(tokens)


def test_the_fuzz_seed_program_is_valid():
    graph = verify(netdsl.load_source(VALID, "m.net"))
    assert graph.output_names == ("logits", "probs")


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(source=mutants())
def test_mutated_programs_give_a_graph_or_a_netdsl_error(source):
    try:
        graph = netdsl.load_source(source, "m.net")
    except NetDSLError as err:
        text = str(err)  # renders
        assert text.startswith(("m.net:", "error:")), text
        if err.loc is not None:
            assert err.loc.file == "m.net" and err.loc.line >= 1 and err.loc.col >= 1
        return
    verify(graph)
