"""The command line: `netdsl show` (IR, parameter table, FLOPs), `netdsl init`, and `netdsl run` with
--input .npy files, --weights written by `init`, --dims, --dtype and --output."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import netdsl
from netdsl.cli import main

LENET = Path(__file__).resolve().parent.parent / "examples" / "lenet5.net"

SYMBOLIC = """\
network pyramid {
    input x: f32[N, 3, H, W=12]
    y = x -> c1: conv2d(4, 3, stride=2, padding=1) -> relu -> global_avgpool -> flatten -> fc: linear(5)
    output y
}
"""


def run_cli(capsys, *argv: str) -> str:
    assert main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def test_show_prints_the_ir_the_parameter_table_and_flops(capsys):
    out = run_cli(capsys, "show", LENET)
    ir, params, flops = out.split("\n\n")
    assert ir.splitlines()[0] == "network lenet5(%image: f32[N, 1, 32, 32]) {"
    assert "  %c1 = conv2d(%image) {out_channels=6, kernel_size=(5, 5)} : f32[N, 6, 28, 28]" in ir
    assert "  %s4 = avgpool2d(%tanh_1) {kernel_size=(2, 2)} : f32[N, 16, 5, 5]" in ir
    assert ir.splitlines()[-1] == "}" and "return logits=%f7" in ir
    rows = {line.split()[0]: line.split()[1:] for line in params.splitlines()}
    assert rows["c1.weight"] == ["6x1x5x5", "150"] and rows["f5.weight"] == ["120x400", "48,000"]
    assert rows["total"][0] == "61,706"
    lines = flops.splitlines()
    assert lines[0] == "FLOPs at N=1:"
    c1 = next(line for line in lines if line.startswith("c1 "))
    assert c1.split()[-1] == "239.90K"  # 2 * 6*28*28 * 1*5*5 multiply-adds + 6*28*28 bias adds
    assert lines[-1].split()[-1] == "871.89K"


def test_show_with_dims(tmp_path, capsys):
    model = tmp_path / "p.net"
    model.write_text(SYMBOLIC)
    out = run_cli(capsys, "show", model, "--dims", "N=2,H=10")
    assert "%c1 = conv2d(%x) {out_channels=4, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)} : " \
           "f32[N, 4, (H + 1)//2, (W + 1)//2]" in out
    assert "FLOPs at H=10, N=2, W=12:" in out
    assert any(line.startswith("c1 ") and "2x4x5x6" in line for line in out.splitlines())
    assert main(["show", str(model)]) == 2
    assert "input dimension `H` has no size" in capsys.readouterr().err


def test_init_then_run_with_input_weights_and_output(tmp_path, capsys):
    weights = tmp_path / "lenet.safetensors"
    out = run_cli(capsys, "init", LENET, "-o", weights, "--seed", "3")
    assert out.strip() == f"wrote 61,706 parameters of `lenet5` to {weights}"
    graph = netdsl.load(LENET)
    w = netdsl.load_weights(weights, graph)
    for k, v in netdsl.init_weights(graph, seed=3).items():
        np.testing.assert_array_equal(w[k], v)

    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = run_cli(capsys, "run", LENET, "--input", tmp_path / "x.npy", "--weights", weights, "--output",
                  tmp_path / "y.npy")
    assert "network lenet5: 61,706 parameters" in out
    assert "input  image: [3, 1, 32, 32]" in out and "output logits: [3, 10]" in out
    y = np.load(tmp_path / "y.npy")
    expected = netdsl.reference.run(graph, x, w)["logits"]
    np.testing.assert_array_equal(y, expected)
    assert f"argmax per row: {expected.argmax(axis=1).tolist()}" in out

    run_cli(capsys, "run", LENET, "--input", tmp_path / "x.npy", "--weights", weights, "--dtype", "f64", "--output",
            tmp_path / "y64.npy")
    y64 = np.load(tmp_path / "y64.npy")
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, expected, rtol=1e-4, atol=1e-5)


def test_npz_weights_and_default_initialisation_agree(tmp_path, capsys):
    run_cli(capsys, "init", LENET, "-o", tmp_path / "w.npz")
    np.save(tmp_path / "x.npy", np.ones((1, 1, 32, 32), np.float32))
    run_cli(capsys, "run", LENET, "--input", tmp_path / "x.npy", "--weights", tmp_path / "w.npz", "--output",
            tmp_path / "a.npy")
    run_cli(capsys, "run", LENET, "--input", tmp_path / "x.npy", "--output", tmp_path / "b.npy")  # seeded init
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_run_with_random_inputs_of_the_given_dims(tmp_path, capsys):
    model = tmp_path / "p.net"
    model.write_text(SYMBOLIC)
    out = run_cli(capsys, "run", model, "--dims", "N=2,H=7,W=9", "--output", tmp_path / "y.npy")
    assert "input  x: [2, 3, 7, 9]" in out and "output y: [2, 5]" in out
    assert np.load(tmp_path / "y.npy").shape == (2, 5)
    out = run_cli(capsys, "run", model, "--dims", "H=7")  # N defaults to 1, W to the file's 12
    assert "input  x: [1, 3, 7, 12]" in out


def test_choose_the_network(tmp_path, capsys):
    model = tmp_path / "two.net"
    model.write_text(SYMBOLIC + SYMBOLIC.replace("pyramid", "other").replace("linear(5)", "linear(2)"))
    assert main(["show", str(model), "--dims", "H=8"]) == 2
    assert "defines several networks: pyramid, other" in capsys.readouterr().err
    out = run_cli(capsys, "run", model, "--network", "other", "--dims", "H=8")
    assert "network other" in out and "output y: [1, 2]" in out


def test_the_console_script(tmp_path):
    exe = shutil.which("netdsl", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the netdsl console script is not installed next to this python")
    proc = subprocess.run([exe, "show", str(LENET)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("network lenet5(")


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"netdsl {version('netdsl')}" == f"netdsl {netdsl.__version__}"
