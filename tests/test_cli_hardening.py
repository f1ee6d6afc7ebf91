"""Hardening of the command line and the public API against sizes, files and writes a user gets wrong.

Each failure is one NetDSLError (a message and a hint, at a source location where there is one); the
command line prints it and exits 2, and leaves no file behind. Sizes are checked against int64 and the
memory budget (NETDSL_MEMORY_BUDGET, --memory-budget) before anything is allocated; an empty value is
an error at the layer that makes it; input files are read header first; files are written whole or
not at all.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import netdsl
from netdsl import NetDSLError
from netdsl.cli import main

LENET = Path(__file__).resolve().parent.parent / "examples" / "lenet5.net"

SMALL = """\
network small {
    input x: f32[N, 3, H=8, W=8]
    y = x -> c1: conv2d(4, 3) -> relu -> global_avgpool -> flatten -> fc: linear(5)
    output y
}
"""

HEADS = """\
network heads {
    input x: f32[N, 6]
    h = x -> trunk: linear(8) -> relu
    output scores = h -> cls: linear(3), probs = h -> cls2: linear(3) -> softmax
}
"""


@pytest.fixture
def small(tmp_path) -> Path:
    path = tmp_path / "small.net"
    path.write_text(SMALL)
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the command line in this process: (exit code, stdout, stderr); never a traceback."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def fails(capsys, *argv) -> str:
    """Run the command line; it must fail with exit code 2 and one error with a hint. Returns stderr."""
    rc, out, err = cli(capsys, *argv)
    assert rc == 2, out + err
    assert err.startswith(("error: ", "/")) and "\nhint: " in err, err
    return err


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- 1. sizes and memory ------------------------------------------------------------------------------


def test_init_of_a_huge_layer_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NETDSL_MEMORY_BUDGET", "1G")
    model = tmp_path / "big.net"
    model.write_text(SMALL.replace("conv2d(4, 3)", "conv2d(1000000000000, 3)"))
    err = fails(capsys, "init", model, "-o", tmp_path / "w.safetensors")
    assert "the weights of `small`" in err and "132,000,000,000,020 bytes" in err  # f32: 1e12x3x3x3 + 1e12 + 5x1e12 + 5
    assert "over the memory budget of 1.0 GiB (1,073,741,824 bytes; NETDSL_MEMORY_BUDGET)" in err
    assert files_in(tmp_path) == ["big.net"]
    with pytest.raises(NetDSLError, match="over the memory budget"):
        netdsl.init_weights(netdsl.load(model))
    with pytest.raises(NetDSLError, match="over the memory budget"):
        netdsl.random_weights(netdsl.load(model))


def test_a_size_beyond_int64_is_refused(tmp_path, capsys):
    model = tmp_path / "wide.net"
    model.write_text("network wide {\n    input x: f32[N, 10000000000]\n"
                     "    output y = x -> fc: linear(10000000000)\n}\n")
    err = fails(capsys, "init", model, "-o", tmp_path / "w.npz")
    assert "bytes, more than a 64-bit size holds" in err
    assert files_in(tmp_path) == ["wide.net"]


def test_random_inputs_over_the_budget(small, capsys, monkeypatch):
    monkeypatch.setenv("NETDSL_MEMORY_BUDGET", "1G")
    err = fails(capsys, "run", small, "--dims", "N=99999999999")
    assert "the random inputs of `small` (x: [99999999999, 3, 8, 8]" in err and "over the memory budget" in err
    assert "230,399,999,997,696 bytes" in err  # drawn in float64 (8 bytes), then cast to float32 (4)


def test_the_budget_flag_the_environment_and_the_help(small, tmp_path, capsys, monkeypatch):
    err = fails(capsys, "init", small, "-o", tmp_path / "w.npz", "--memory-budget", "100")
    assert "over the memory budget of 100 bytes (--memory-budget)" in err
    monkeypatch.setenv("NETDSL_MEMORY_BUDGET", "1K")
    assert "(1,024 bytes; NETDSL_MEMORY_BUDGET)" in fails(capsys, "init", LENET, "-o", tmp_path / "w.npz")
    assert cli(capsys, "init", LENET, "-o", tmp_path / "w.npz", "--memory-budget", "1M")[0] == 0  # the flag wins
    monkeypatch.setenv("NETDSL_MEMORY_BUDGET", "lots")
    assert "NETDSL_MEMORY_BUDGET: `lots` is not an amount of memory" in fails(capsys, "run", small)
    assert "--memory-budget: `3Q` is not an amount of memory" in fails(capsys, "run", small, "--memory-budget", "3Q")
    monkeypatch.delenv("NETDSL_MEMORY_BUDGET")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "NETDSL_MEMORY_BUDGET" in capsys.readouterr().out.replace("\n", " ")
    assert files_in(tmp_path) == ["small.net", "w.npz"]


def test_a_npy_header_claiming_45_gib_is_not_allocated(small, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NETDSL_MEMORY_BUDGET", "1G")
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (12_000_000_000,)})
    assert path.stat().st_size == 128
    err = fails(capsys, "run", small, "--input", path)
    assert f"input `{path}` (shape [12000000000], float32) would take 44.7 GiB (48,000,000,000 bytes" in err


def test_weights_files_are_checked_by_their_headers(small, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NETDSL_MEMORY_BUDGET", "1G")
    graph = netdsl.load(small)
    st = tmp_path / "w.safetensors"
    header = json.dumps({"c1.weight": {"dtype": "F32", "shape": [12_000_000_000], "data_offsets": [0, 48_000_000_000]}})
    st.write_bytes(len(header).to_bytes(8, "little") + header.encode())
    with pytest.raises(NetDSLError, match=r"weights file .* would take 44\.7 GiB \(48,000,000,000 bytes"):
        netdsl.load_weights(st, graph)
    npz = tmp_path / "w.npz"
    with zipfile.ZipFile(npz, "w") as z, z.open("c1.weight.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)})
    err = fails(capsys, "run", small, "--weights", npz)
    assert "tensor `c1.weight` of weights file" in err and "4.0 TiB" in err
    header = json.dumps({"c1.weight": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}})
    st.write_bytes(len(header).to_bytes(8, "little") + header.encode() + b"\0\0")
    with pytest.raises(NetDSLError, match="`c1.weight` is bf16, which NumPy cannot hold"):
        netdsl.load_weights(st, graph)


def test_the_reference_run_checks_each_value_at_bind_time(monkeypatch):
    graph = netdsl.load_source(SMALL.replace("conv2d(4, 3)", "conv2d(64, 3)"), "m.net")
    weights = netdsl.init_weights(graph)
    x = np.zeros((1, 3, 64, 64), np.float32)  # 48 KiB; the convolution's output 64x62x62 floats: 961 KiB
    monkeypatch.setenv("NETDSL_MEMORY_BUDGET", "100K")
    with pytest.raises(NetDSLError, match=r"the value of `conv2d` `c1` .* would take 961\.0 KiB") as info:
        netdsl.reference.run(graph, {"x": x}, weights)
    assert info.value.loc is not None and (info.value.loc.line, info.value.loc.col) == (3, 18)
    monkeypatch.setenv("NETDSL_MEMORY_BUDGET", "1M")
    with pytest.raises(NetDSLError, match=r"1\.9 MiB"):  # in f64, twice the bytes
        netdsl.reference.run(graph, {"x": x}, weights, dtype="f64")
    monkeypatch.setenv("NETDSL_MEMORY_BUDGET", "4M")
    assert netdsl.reference.run(graph, {"x": x}, weights)["y"].shape == (1, 5)


# --- 2. empty and negative sizes at bind time -----------------------------------------------------------


@pytest.mark.parametrize("dims", ["H=0", "N=0", "N=\u00b2", "N=-1", "N=1.5", "N=", "=3", "N=1,N=2"])
def test_bad_dims_are_refused(small, capsys, dims):
    err = fails(capsys, "run", small, "--dims", dims)
    assert "--dims" in err


def test_check_with_empty_dims_is_refused_before_any_kernel(small, capsys):
    err = fails(capsys, "check", small, "--dims", "N=1,H=0,W=0")
    assert "bad --dims entry `H=0`: a size is a whole number of at least 1" in err


@pytest.mark.parametrize("seed", ["-1", "\u00b2", "x", "1e3", str(2**63)])
def test_bad_seeds_are_refused(small, tmp_path, capsys, seed):
    assert "bad --seed" in fails(capsys, "run", small, "--seed", seed)
    assert "bad --seed" in fails(capsys, "init", small, "-o", tmp_path / "w.npz", "--seed", seed)
    assert files_in(tmp_path) == ["small.net"]
    with pytest.raises(NetDSLError, match="seed"):
        netdsl.init_weights(netdsl.load(small), seed=-1)


def test_a_layer_whose_output_would_be_empty_is_located(small, tmp_path, capsys):
    err = fails(capsys, "run", small, "--dims", "H=2,W=2")
    assert err.startswith(f"{small}:3:18: error: `conv2d` `c1` would give an empty output at H=2, N=1, W=2")
    assert "`H - 2` = 0" in err and "so that H - 2 is at least 1" in err
    assert fails(capsys, "show", small, "--dims", "H=2,W=2") == err
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 2, 2), np.float32))  # the same through an input file
    assert fails(capsys, "run", small, "--input", tmp_path / "x.npy").startswith(f"{small}:3:18: error: ")
    assert "3x3" not in err and cli(capsys, "run", small, "--dims", "H=3,W=3")[0] == 0  # 1x1 is fine


def test_empty_arrays_through_the_api_name_the_input(small):
    graph = netdsl.load(small)
    with pytest.raises(NetDSLError, match=r"input `x` expects f32\[N, 3, H, W\], got an empty array"):
        netdsl.reference.run(graph, np.zeros((0, 3, 8, 8), np.float32), netdsl.init_weights(graph))
    with pytest.raises(NetDSLError, match=r"`conv2d` `c1` would give an empty output") as info:
        netdsl.reference.run(graph, np.zeros((1, 3, 2, 9), np.float32), netdsl.init_weights(graph))
    assert info.value.loc.line == 3


# --- 3. input files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, array, words", [
    ("complex", np.ones((1, 3, 8, 8), np.complex64), "complex numbers"),
    ("text", np.array(["a", "b"]), "text"),
    ("structured", np.zeros(3, dtype=[("a", "f4"), ("b", "i4")]), "records"),
    ("object", np.array([None, 1], dtype=object), "Python objects"),
])
def test_input_files_of_other_element_types(small, tmp_path, capsys, kind, array, words):
    path = tmp_path / f"{kind}.npy"
    np.save(path, array, allow_pickle=True)
    err = fails(capsys, "run", small, "--input", path)
    assert f"input `{path}` holds {words}" in err and "floats, integers or booleans" in err
    if kind == "complex":
        assert "x.real" in err


def test_empty_truncated_archive_and_directory_inputs(small, tmp_path, capsys):
    empty = tmp_path / "empty.npy"
    empty.touch()
    assert f"cannot read input `{empty}`: the file is empty" in fails(capsys, "run", small, "--input", empty)
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((1, 3, 8, 8), np.float32))
    short.write_bytes(short.read_bytes()[:200])
    assert f"cannot read input `{short}`" in fails(capsys, "run", small, "--input", short)
    archive = tmp_path / "x.npz"
    np.savez(archive, x=np.zeros((1, 3, 8, 8), np.float32))
    assert f"input `{archive}` is a .npz archive" in fails(capsys, "run", small, "--input", archive)
    folder = tmp_path / "folder.npy"
    folder.mkdir()
    assert f"cannot read input `{folder}`: Is a directory" in fails(capsys, "run", small, "--input", folder)
    missing = tmp_path / "missing.npy"
    assert f"input `{missing}` does not exist" in fails(capsys, "run", small, "--input", missing)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="the superuser reads any file")
def test_an_unreadable_file_says_why(small, tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((1, 3, 8, 8), np.float32))
    path.chmod(0)
    assert "Permission denied" in fails(capsys, "run", small, "--input", path)
    locked = tmp_path / "locked"
    locked.mkdir()
    netdsl.save_weights(locked / "w.npz", netdsl.init_weights(netdsl.load(small)))
    locked.chmod(0)
    try:
        err = fails(capsys, "run", small, "--weights", locked / "w.npz")
    finally:
        locked.chmod(0o700)
    assert "Permission denied" in err and "does not exist" not in err


# --- 4. writes ----------------------------------------------------------------------------------------------


def test_writing_onto_a_directory_or_into_a_missing_one(small, tmp_path, capsys):
    target = tmp_path / "w.safetensors"
    target.mkdir()
    assert f"cannot write weights file `{target}`: it is a directory" in fails(capsys, "init", small, "-o", target)
    missing = tmp_path / "no" / "w.npz"
    assert "there is no directory" in fails(capsys, "init", small, "-o", missing)
    assert "it is a directory" in fails(capsys, "run", small, "--output", target)
    assert files_in(tmp_path) == ["small.net", "w.safetensors"] and not any(target.iterdir())


SMALL_FILE_LIMIT = """\
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))  # a write past 64 KiB fails (EFBIG)
from netdsl.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="file size limits are POSIX")
@pytest.mark.parametrize("argv", [("init", "-o", "w.npz"), ("init", "-o", "w.safetensors"),
                                  ("run", "--dims", "N=64", "--output", "w.npy")])
def test_a_write_that_fails_part_way_leaves_the_old_file(tmp_path, argv):
    model = tmp_path / "m.net"
    model.write_text(SMALL.replace("linear(5)", "linear(5000)"))  # ~80 KiB of weights; 64x5000 outputs
    out = tmp_path / argv[-1]
    out.write_bytes(b"the old file")
    proc = subprocess.run([sys.executable, "-c", SMALL_FILE_LIMIT, argv[0], str(model), *argv[1:-1], str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: cannot write {'output' if argv[0] == 'run' else 'weights'} file `{out}`: ")
    assert "File too large" in proc.stderr or "requested and" in proc.stderr  # np.save's own words for a short write
    assert "Traceback" not in proc.stderr and "hint: nothing was written" in proc.stderr
    assert files_in(tmp_path) == sorted(["m.net", out.name]) and out.read_bytes() == b"the old file"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_are_written_with_the_umask_derived_mode(small, tmp_path, capsys, umask, mode):
    old = os.umask(umask)
    try:
        for name in ("w.safetensors", "w.npz"):
            assert cli(capsys, "init", small, "-o", tmp_path / name)[0] == 0
        assert cli(capsys, "run", small, "--output", tmp_path / "y.npy")[0] == 0
    finally:
        os.umask(old)
    for name in ("w.safetensors", "w.npz", "y.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert files_in(tmp_path) == ["small.net", "w.npz", "w.safetensors", "y.npy"]  # no temporary files


def test_run_output_saves_every_output(tmp_path, capsys):
    model = tmp_path / "heads.net"
    model.write_text(HEADS)
    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    err = fails(capsys, "run", model, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert "cannot save the 2 outputs of `heads` (scores, probs)" in err and "name a .npz file" in err
    assert not (tmp_path / "y.npy").exists()
    assert cli(capsys, "run", model, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npz")[0] == 0
    graph = netdsl.load(model)
    expected = netdsl.reference.run(graph, x, netdsl.init_weights(graph))
    with np.load(tmp_path / "y.npz") as saved:
        assert saved.files == ["scores", "probs"]
        for name in saved.files:
            np.testing.assert_array_equal(saved[name], expected[name])


def test_one_output_keeps_npy_or_takes_npz(small, tmp_path, capsys):
    assert cli(capsys, "run", small, "--output", tmp_path / "y.npz")[0] == 0
    with np.load(tmp_path / "y.npz") as saved:
        assert saved.files == ["y"] and saved["y"].shape == (1, 5)
    assert cli(capsys, "run", small, "--output", tmp_path / "y.npy")[0] == 0
    assert np.load(tmp_path / "y.npy").shape == (1, 5)


# --- 5. the Python API --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenet():
    graph = netdsl.load(LENET)
    return graph, netdsl.init_weights(graph), np.zeros((1, 1, 32, 32), np.float32)


@pytest.mark.parametrize("dtype", ["f16", "bf16", "i32", "fp32", "float32"])
def test_reference_dtypes(lenet, dtype):
    graph, w, x = lenet
    with pytest.raises(NetDSLError, match=r"the reference backend runs in f32 or f64, not") as info:
        netdsl.reference.run(graph, x, w, dtype=dtype)
    assert "f64" in info.value.hint


def test_reference_weights_missing_or_renamed(lenet):
    graph, w, x = lenet
    renamed = {("c1.weights" if k == "c1.weight" else k): v for k, v in w.items() if k != "f7.bias"}
    with pytest.raises(NetDSLError, match=r"weights: missing tensors `c1.weight`, `f7.bias`; unexpected: "
                                          r"`c1.weights`") as info:
        netdsl.reference.run(graph, x, renamed)
    assert info.value.hint == "did you mean `c1.weights`?"
    with pytest.raises(NetDSLError) as info:
        netdsl.reference.run(graph, x, {k: v for k, v in w.items() if k != "f7.bias"})
    assert info.value.message == "weights: missing tensor `f7.bias`" and "netdsl show" in info.value.hint
    assert netdsl.reference.run(graph, x, {**w, "spare": np.zeros(3)})["logits"].shape == (1, 10)  # extras: fine
    with pytest.raises(NetDSLError, match="weights must be a dict of arrays"):
        netdsl.reference.run(graph, x, list(w.values()))


def test_reference_weights_of_the_wrong_shape_or_type(lenet):
    graph, w, x = lenet
    with pytest.raises(NetDSLError, match=r"tensor `c3.weight` has shape \(16, 6, 3, 3\), the model expects "
                                          r"\(16, 6, 5, 5\)") as info:
        netdsl.reference.run(graph, x, {**w, "c3.weight": np.zeros((16, 6, 3, 3), np.float32)})
    assert info.value.loc is not None and info.value.loc.line == 10 and info.value.hint
    with pytest.raises(NetDSLError, match="tensor `c1.bias` has element type <U1"):
        netdsl.reference.run(graph, x, {**w, "c1.bias": np.array(list("abcdef"))})


def test_reference_inputs_are_named(lenet):
    graph, w, x = lenet
    with pytest.raises(NetDSLError, match=r"input `image` expects f32\[N, 1, 32, 32\], got an array of shape "
                                          r"\(1, 32, 32\)") as info:
        netdsl.reference.run(graph, x[0], w)
    assert "`image` takes an array of 4 dimensions" in info.value.hint
    with pytest.raises(NetDSLError, match=r"input `image` expects .* shape \(1, 1, 28, 28\)"):
        netdsl.reference.run(graph, np.zeros((1, 1, 28, 28), np.float32), w)
    with pytest.raises(NetDSLError, match=r"no value given for input `image` \(given: `img`\)") as info:
        netdsl.reference.run(graph, {"img": x}, w)
    assert info.value.hint == "did you mean `img`?"
    with pytest.raises(NetDSLError, match=r"input `image` expects f32\[N, 1, 32, 32\] \(floating point\), got an "
                                          r"array of complex64"):
        netdsl.reference.run(graph, x.astype(np.complex64), w)
