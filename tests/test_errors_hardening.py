"""Hostile and generated input never escapes as anything but a located NetDSLError (or a correct graph):
deep nesting (and long generated sums), encodings and odd line breaks, numbers too large for their use,
unknown element types, and layers that give an empty output at the file's default sizes."""

from __future__ import annotations

import re
import sys
import time

import pytest

import netdsl
from netdsl import NetDSLError
from netdsl.cli import main
from netdsl.errors import source_line
from netdsl.frontend.parser import MAX_NESTING
from netdsl.ir.dims import MAX_DEPTH as MAX_DIM_DEPTH
from netdsl.ir.types import numel
from netdsl.ops.registry import show_value

HEAD = "network n {\n    input x: f32[N, 3, 8, 8]\n"  # lines 1-2 of most programs below


def net(*lines: str) -> str:
    """A network over x: f32[N, 3, 8, 8]; ``lines`` start on line 3."""
    return HEAD + "".join(f"    {line}\n" for line in lines) + "}\n"


def error_of(source, **kw) -> NetDSLError:
    """The NetDSLError ``source`` gives (any other exception fails the test)."""
    with pytest.raises(NetDSLError) as info:
        netdsl.load_source(source, "m.net", **kw)
    return info.value


def check(err: NetDSLError, message: str, line: int, col: int, hint: str | None = None) -> NetDSLError:
    """``message`` (a substring) at m.net:line:col, with that line of the source (lines end at \\n only, as
    Lark counts them) and a caret under column ``col``."""
    text = str(err)
    assert message in err.message, text
    assert err.loc is not None and (err.loc.file, err.loc.line, err.loc.col) == ("m.net", line, col), text
    head, shown, caret = text.split("\n")[:3]
    assert head == f"m.net:{line}:{col}: error: {err.message}", text
    assert shown == f"{line:>5} | {source_line(err.loc.source, line)}", text
    assert re.fullmatch(r" {6}\| [ \t]{%d}\^+" % (col - 1), caret), text
    if hint is not None:
        assert err.hint and hint in err.hint, text
    return err


def loads(source) -> netdsl.Graph:
    return netdsl.load_source(source, "m.net")


# ---------------------------------------------------------------------------------------------
# deep nesting and long generated expressions
# ---------------------------------------------------------------------------------------------

def test_a_2000_term_sum_of_tensors_elaborates_without_recursion():
    g = loads(net("y = " + " + ".join(["x"] * 2000), "output y"))
    assert [n.op for n in g.nodes].count("add") == 1999


def test_long_left_associative_arithmetic_of_numbers_and_tensors():
    g = loads(net("y = x -> flatten -> linear(" + " + ".join(["1"] * 2000) + ")", "output y"))
    assert g.outputs[0].type.shape[-1] == 2000
    g = loads(net("y = " + " + ".join(["x * 2"] * 1000) + " - 1", "output y"))
    assert len(g.nodes) == 2000


def test_a_5000_stage_chain_and_a_cycle_through_a_long_sum():
    loads(net("y = x" + " -> relu" * 5000, "output y"))
    err = error_of(net("a = " + " + ".join(["x"] * 2000) + " + b", "b = a -> relu", "output b"))
    check(err, "values form a cycle: b -> a -> b", 3, 9 + 4 * 2000)


def test_nested_groups_past_the_limit_point_at_the_innermost_group():
    err = error_of(net("y = x -> " + "(relu -> " * 250 + "relu" + ")" * 250, "output y"))
    check(err, f"nesting deeper than {MAX_NESTING} levels", 3, 14 + 9 * MAX_NESTING, "give intermediate results names")


def test_nested_calls_past_the_limit_point_at_the_innermost_call():
    err = error_of(net("y = " + "relu(" * 330 + "x" + ")" * 330, "output y"))
    check(err, "nesting deeper than", 3, 9 + 5 * MAX_NESTING)
    assert err.loc.width == 4  # the name of the call


@pytest.mark.parametrize("expr, step", [
    ("x * (" + "1+(" * 400 + "1" + ")" * 401, 3),  # right-nested sums
    ("-(" * 300 + "x" + ")" * 300, 2),  # unary minus
])
def test_right_nested_operators_past_the_limit(expr, step):
    err = error_of(net(f"y = {expr}", "output y"))
    assert err.message == f"nesting deeper than {MAX_NESTING} levels"
    assert err.loc.line == 3 and err.loc.col > step * MAX_NESTING


def test_nested_tuples_and_subscripts_past_the_limit():
    err = error_of(net("y = x -> reshape(" + "(" * 200 + "N" + ", 1)" * 200 + ")", "output y"))
    check(err, "nesting deeper than", 3, 22 + MAX_NESTING - 1)
    err = error_of(net("y = x" + "[0]" * 300, "output y"))
    assert "nesting deeper than" in err.message


@pytest.mark.parametrize("program", [
    net("y = x -> " + "(relu -> " * (MAX_NESTING - 1) + "relu" + ")" * (MAX_NESTING - 1), "output y"),
    net("y = " + "relu(" * MAX_NESTING + "x" + ")" * MAX_NESTING, "output y"),
    net("y = x -> " + "add(x -> " * (MAX_NESTING - 1) + "relu" + ")" * (MAX_NESTING - 1), "output y"),
    net("y = x * (" + "1+(" * (MAX_NESTING - 1) + "1" + ")" * MAX_NESTING, "output y"),
    net("y = " + "-(" * MAX_NESTING + "x" + ")" * MAX_NESTING, "output y"),
], ids=["groups", "calls", "calls-in-chains", "sums", "minus"])
def test_nesting_at_the_limit_elaborates_in_a_bounded_stack(program):
    """The deepest program accepted needs well under Python's default recursion limit (1000 frames), so it
    works from any caller: here it gets 800 frames above the test's own."""
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 800)
    try:
        loads(program)
    finally:
        sys.setrecursionlimit(old)


def test_symbolic_sizes_nest_floor_divisions_to_a_bounded_depth():
    """A scaling between two floor divisions cannot be merged (`(2*(H//3))//3`); each such pair nests the
    size expression one level deeper, and everything that reads a size recurses through it."""
    loop = "network n {\n    input x: f32[N, 3, H, W]\n    y = x -> (maxpool(3, stride=3) -> upsample(scale_factor=2)) * %d\n" \
           "    output y\n}\n"
    assert loads(loop % MAX_DIM_DEPTH)
    err = error_of(loop % 400)
    check(err, f"the output size of `maxpool2d` is too complex: it would nest more than {MAX_DIM_DEPTH}", 3, 15,
          "give the input fixed sizes")
    err = error_of(net("y = x -> reshape(N, 3, " + "(" * 40 + "N" + " * 2) // 3" * 40 + ", 8)", "output y"))
    check(err, "this size is too complex", 3, 28 + 40 - MAX_DIM_DEPTH - 1)


def _stacked_blocks(n: int, inner: int) -> str:
    blocks = ["block b0() {\n    input x\n    output " + "relu(" * inner + "x" + ")" * inner + "\n}\n"]
    blocks += [f"block b{i}() {{\n    input x\n    output x -> b{i - 1}\n}}\n" for i in range(1, n)]
    return "".join(blocks) + f"network n {{\n    input x: f32[N, 3]\n    output x -> b{n - 1}\n}}\n"


def test_blocks_expanding_blocks_count_towards_the_nesting_limit():
    loads(_stacked_blocks(40, 40))
    err = error_of(_stacked_blocks(120, 1))
    assert err.message == f"nesting deeper than {MAX_NESTING} levels, counting the blocks being expanded"
    assert err.loc.line > 3 and "blocks that expand blocks" in err.hint
    assert sum("in block `b" in m for m, _ in err.notes) == MAX_NESTING
    err = error_of(_stacked_blocks(30, 90))  # each file-level expression is within the limit; the stack is not
    check(err, "counting the blocks", 3, 12 + 5 * (MAX_NESTING - 30))


def test_deeply_unbalanced_brackets_are_a_syntax_error():
    err = error_of(net("y = " + "relu(" * 5000 + "x", "output y"))
    assert "unexpected" in err.message and err.loc is not None
    err = error_of(net("y = x -> " + "(" * 5000 + "relu", "output y"))
    assert "unexpected" in err.message and err.loc is not None


# ---------------------------------------------------------------------------------------------
# encodings and line breaks
# ---------------------------------------------------------------------------------------------

BAD_LAYER = "network n {\n    input x: f32[N, 3]\n    # a comment\n    y = x -> rleu\n    output y\n}\n"


def test_a_latin1_byte_is_a_located_error(tmp_path):
    path = tmp_path / "m.net"
    path.write_bytes(BAD_LAYER.replace("a comment", "café").encode("latin-1"))
    with pytest.raises(NetDSLError) as info:
        netdsl.load(path)
    err = info.value
    assert "not UTF-8" in err.message and "0xe9" in err.message and "save the file as UTF-8" in err.hint
    assert (err.loc.file, err.loc.line, err.loc.col) == (str(path), 3, 10)
    assert str(err).split("\n")[1:3] == ["    3 |     # caf\ufffd", "      |          ^"]


def test_a_bad_byte_after_multibyte_characters_is_counted_in_characters():
    data = "network n {\n  # ééé \n}\n".encode() + b"# \xff\n"
    err = error_of(data)
    assert (err.loc.line, err.loc.col) == (4, 3)
    data = "network n {\n  # ééé".encode() + b"\x80 \n}\n"
    err = error_of(data)
    assert (err.loc.line, err.loc.col) == (2, 8)


def test_a_byte_order_mark_is_accepted(tmp_path):
    ok = "network n {\n    input x: f32[N, 3]\n    output x -> relu\n}\n"
    path = tmp_path / "bom.net"
    path.write_bytes(b"\xef\xbb\xbf" + ok.encode())
    assert len(netdsl.load(path).nodes) == 1
    assert len(loads("\ufeff" + ok).nodes) == 1
    assert len(loads(b"\xef\xbb\xbf" + ok.encode()).nodes) == 1
    check(error_of("\ufeff" + BAD_LAYER), "unknown layer `rleu`", 4, 14)
    err = error_of(b"\xef\xbb\xbf# \xe9\n")  # after a byte order mark, the column counts from the first character
    assert (err.loc.line, err.loc.col) == (1, 3)
    check(error_of("\ufeff\ufeff" + ok), "unexpected character U+FEFF", 1, 1, "may only start the file")


def test_load_source_takes_bytes_or_text():
    g = loads(b"network n {\n    input x: f32[N, 3]\n    output x -> relu\n}\n")
    assert g.nodes[0].op == "relu"
    check(error_of(BAD_LAYER.encode()), "unknown layer `rleu`", 4, 14)
    assert netdsl.parse(BAD_LAYER.encode(), "m.net").networks["n"]
    for wrong in (None, 3, ["network"]):
        with pytest.raises(NetDSLError, match="takes the text of a .net file"):
            netdsl.load_source(wrong)


def test_an_import_that_is_not_utf8_points_at_the_byte_and_the_import(tmp_path):
    (tmp_path / "lib.net").write_bytes(b"block b() {\n    input x\n    output x  # \xe9t\xe9\n}\n")
    main_file = tmp_path / "m.net"
    main_file.write_text('import "lib.net"\nnetwork n {\n    input x: f32[N, 3]\n    output x -> b\n}\n')
    with pytest.raises(NetDSLError) as info:
        netdsl.load(main_file)
    err = info.value
    assert err.loc.file.endswith("lib.net") and (err.loc.line, err.loc.col) == (3, 17)
    assert any("imported from m.net" in m and loc.line == 1 for m, loc in err.notes)


@pytest.mark.parametrize("brk", ["\x0c", "\x0b", "\x1c", "\x85", "\u2028", "\u2029"])
def test_line_breaks_that_lark_does_not_count_keep_the_snippet_on_the_right_line(brk):
    """Lark counts lines at \\n only; a comment holding a form feed, U+2028, ... is still one line."""
    err = error_of(f"network n {{\n    input x: f32[N, 3]  # a{brk}b\n    y = x -> rleu\n    output y\n}}\n")
    check(err, "unknown layer `rleu`", 3, 14)
    assert brk not in str(err)


@pytest.mark.parametrize("brk", ["\x85", "\u2028", "\u2029", "\x0b"])
def test_a_stray_line_break_character_is_an_unexpected_character_on_its_own_line(brk):
    err = error_of(f"network n {{\n    input x: f32[N, 3]{brk}\n    output x\n}}\n")
    check(err, "unexpected character", 2, 23)
    assert str(err).split("\n")[1] == "    2 |     input x: f32[N, 3] "


def test_form_feed_before_the_end_of_file():
    err = error_of("network n {\n\x0c    input x: f32[N, 3]\n    output x\n")
    check(err, "unexpected end of file", 3, 13)


def test_crlf_and_tabs_in_snippets():
    err = error_of(BAD_LAYER.replace("\n", "\r\n"))
    check(err, "unknown layer `rleu`", 4, 14)
    assert "\r" not in str(err)
    err = error_of(BAD_LAYER.replace("    y = x", "\ty =\tx"))
    assert (err.loc.line, err.loc.col) == (4, 11)
    assert str(err).split("\n")[1:3] == ["    4 | \ty =\tx -> rleu", "      | \t   \t     ^^^^"]


# ---------------------------------------------------------------------------------------------
# numbers too large for their use
# ---------------------------------------------------------------------------------------------

def test_a_size_beyond_int64_is_a_located_attribute_error():
    err = error_of(net("y = x -> flatten -> linear(100000000000000000000)", "output y"))
    check(err, "attribute `out_features` is out of range: 100000000000000000000 does not fit a 64-bit integer", 3, 32)
    err = error_of(net("y = x -> conv2d(8, 3, padding=(1, 9223372036854775808))", "output y"))
    check(err, "attribute `padding` is out of range", 3, 27)
    err = error_of(net("y = x -> reshape(N, 100000000000000000000 * 2)", "output y"))
    check(err, "does not fit a 64-bit integer", 3, 22)
    err = error_of(net("y = x -> reshape(N * 100000000000000000000)", "output y"))
    check(err, "does not fit a 64-bit integer", 3, 22)
    assert loads(net("y = x -> flatten -> linear(9223372036854775807 // 4611686018427387904)", "output y"))


def test_a_very_long_integer_is_shown_shortened():
    err = error_of(net(f"y = x -> flatten -> linear({'7' * 4000})", "output y"))
    check(err, "attribute `out_features` is out of range: 77777777777777777777...(4000 digits)", 3, 32)
    err = error_of(net(f"y = x -> dropout(p={'9' * 4000})", "output y"))
    check(err, "attribute `p` must be a number that fits a float, got 99999999999999999999...(4000 digits)", 3, 22)
    assert show_value(10**30) == "10000000000000000000...(31 digits)"
    assert show_value(-(10**5000) + 1) == "-99999999999999999999...(5000 digits)"
    assert show_value((1, 10**40, "a")) == '(1, 10000000000000000000...(41 digits), "a")'
    assert show_value(10**29) == str(10**29)


def test_products_of_huge_integers_stop_quickly():
    err = error_of(net(f"y = x -> dropout(p={'9' * 3000}*{'9' * 3000})", "output y"))
    check(err, "the result of `*` is too large", 3, 24)
    big = "9" * 2000
    start = time.perf_counter()
    err = error_of(net("y = x -> flatten -> linear(" + " * ".join([big] * 3000) + ")", "output y"))
    assert "too large" in err.message and time.perf_counter() - start < 10


@pytest.mark.parametrize("call, attr", [
    ("leaky_relu(alpha=1e999)", "alpha"),
    ("leaky_relu(alpha=1e999 - 1e999)", "alpha"),
    ("batchnorm(eps=1e999)", "eps"),
    ("dropout(p=-1e999)", "p"),
])
def test_non_finite_float_attributes_are_rejected(call, attr):
    err = error_of(net(f"y = x -> {call}", "output y"))
    check(err, f"attribute `{attr}` must be a finite number", 3, 14 + len(call.split("(")[0]) + 1)
    assert "inf" in err.message or "nan" in err.message


def test_sizes_beyond_int64_in_types_and_parameters():
    err = error_of("network n {\n    input x: f32[N, 100000000000000000000]\n    output x\n}\n")
    check(err, "a dimension must fit a 64-bit integer", 2, 21)
    err = error_of("network n {\n    input x: f32[N, H=100000000000000000000]\n    output x\n}\n")
    check(err, "a dimension must fit a 64-bit integer", 2, 23)
    err = error_of(net("param w: [3, 100000000000000000000]", "output x * 1"))
    check(err, "a parameter's dim must fit a 64-bit integer", 3, 18)
    for init, col in ((f"const({'9' * 400})", 26), (f"normal(std={'9' * 400})", 31), (f"uniform({'9' * 4000})", 28)):
        err = error_of(net(f"param w: [3] = {init}", "output x * 1"))
        check(err, "number, got 99999999999999999999...(", 3, col)


def test_numel_is_exact_for_huge_shapes():
    assert numel((2**40, 2**40)) == 2**80
    assert numel(()) == 1 and numel((3, 0)) == 0


# ---------------------------------------------------------------------------------------------
# element types and dimension defaults
# ---------------------------------------------------------------------------------------------

def test_unknown_element_type_of_a_block_input():
    src = "block b() {\n    input x: q8[N, 3]\n    output x -> relu\n}\n" + net("output x -> b")
    check(error_of(src), "unknown element type `q8`", 2, 14, "one of f32")
    src = "block b() {\n    input x: f3[N, 3]\n    output x -> relu\n}\n" + net("output x -> relu")  # b unused
    check(error_of(src), "unknown element type `f3`", 2, 14, "did you mean `f32`?")


def test_a_block_input_of_another_element_type():
    src = "block b() {\n    input ids: i64[N, 8]\n    output ids -> embedding(10, 4)\n}\n" + net("output x -> b")
    err = check(error_of(src), "block input `ids` expects element type i64, got f32[N, 3, 8, 8]", 2, 11)
    assert any("in block `b`" in m for m, _ in err.notes)


@pytest.mark.parametrize("where", ["network", "block"])
def test_a_symbolic_default_of_zero_is_rejected_like_a_static_zero(where):
    static = error_of("network n {\n    input x: f32[N, 0, 8]\n    output x\n}\n")
    check(static, "a dimension must be at least 1", 2, 21)
    if where == "network":
        src = "network n {\n    input x: f32[N, 3, H=0]\n    output x\n}\n"
        line = 2
    else:
        src = "block b() {\n    input x: f32[N, 3, H=0]\n    output x\n}\n" + net("output x -> relu")
        line = 2
    check(error_of(src), static.message, line, 26, "`H=0`")


# ---------------------------------------------------------------------------------------------
# empty outputs at the file's default sizes
# ---------------------------------------------------------------------------------------------

def sized(*lines: str, dims: str = "H=2, W=2") -> str:
    return f"network n {{\n    input x: f32[N, 3, {dims}]\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


def test_a_conv_with_an_empty_output_at_the_default_sizes():
    err = error_of(sized("y = x -> conv2d(4, 3)", "output y"))
    check(err, "`conv2d` gives an empty output (f32[1, 4, 0, 0], from f32[N, 4, H - 2, W - 2]) for the default "
               "sizes H=2, W=2", 3, 14, "give larger defaults")
    assert [(m, loc.col) for m, loc in err.notes] == [("the default of `H`", 24), ("the default of `W`", 29)]


def test_a_negative_size_at_the_default_sizes_names_the_first_node():
    err = error_of(sized("y = x -> relu -> conv2d(4, 5, stride=2) -> conv2d(4, 3)", "output y", dims="H=3, W=9"))
    check(err, "`conv2d` gives an empty output (f32[1, 4, 0, 3], from f32[N, 4, (H + 1)//2 - 2", 3, 22)
    assert err.message.endswith("for the default sizes H=3")  # only the dims that are empty
    assert [m for m, _ in err.notes] == ["the default of `H`"]
    err = error_of(sized("y = x -> maxpool(2) -> maxpool(2)", "output y", dims="H=3, W=64"))
    check(err, "`maxpool2d` gives an empty output", 3, 28)


def test_empty_output_inside_a_block_and_in_the_cli(tmp_path, capsys):
    src = ("block shrink() {\n    input x\n    output x -> conv2d(4, 3) -> conv2d(4, 3)\n}\n"
           + sized("y = x -> shrink", "output y", dims="H=4, W=4"))
    check(error_of(src), "`conv2d` gives an empty output", 3, 33)
    path = tmp_path / "m.net"
    path.write_text(src)
    assert main(["show", str(path)]) == 2
    captured = capsys.readouterr()
    assert "gives an empty output" in captured.err and "Traceback" not in captured.err and "x-" not in captured.out


def test_dims_without_defaults_are_not_checked_and_good_defaults_pass():
    assert loads(sized("y = x -> conv2d(4, 3)", "output y", dims="H, W"))
    assert loads(sized("y = x -> conv2d(4, 3)", "output y", dims="H=3, W=3")).outputs[0].type.concrete(
        {"N": 1, "H": 3, "W": 3}) == (1, 4, 1, 1)


# ---------------------------------------------------------------------------------------------
# nothing but a NetDSLError escapes
# ---------------------------------------------------------------------------------------------

HOSTILE = [
    net("y = x -> " + "(relu -> " * 600 + "relu" + ")" * 600, "output y"),
    net("y = " + "relu(" * 2000 + "x" + ")" * 2000, "output y"),
    net("y = " + "(" * 3000 + "x" + ")" * 3000, "output y"),  # parentheses alone nest nothing
    net("y = x * (" + "1+(" * 3000 + "1" + ")" * 3001, "output y"),
    net("y = " + " + ".join(["x"] * 3000) + " + 1e999", "output y"),
    net("y = x -> dropout(p=" + "9" * 5000 + ")", "output y"),
    net("y = x -> flatten -> linear(" + " - ".join(["4611686018427387904"] * 3) + ")", "output y"),
    net("y = x -> upsample(scale_factor=1e999)", "output y"),
    net("y = x -> upsample(scale_factor=(1e999, 2))", "output y"),
    net("y = x -> " + "relu -> " * 20 + "reshape(N, -1, 100000000000000000000)", "output y"),
    b"network n {\n    input x: f32[N, 3]\xc0\xaf\n    output x\n}\n",
    "\ufeff\ufeff" + net("output x"),
    net("output x # \x00\x1b[31m\u2028\x85"),
    "network n {\n    input x: f32[N, 3, H=1, W=1]\n    output x -> avgpool(2)\n}\n",
]


@pytest.mark.parametrize("source", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_sources_give_a_graph_or_a_located_netdsl_error(source):
    try:
        loads(source)
    except NetDSLError as err:
        assert err.loc is not None, str(err)
        str(err)  # renders
