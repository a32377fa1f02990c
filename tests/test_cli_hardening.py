"""Hardening of the ``dnnblocks`` command (issue 14): outputs never overwrite inputs,
unwritable outputs fail before training, CSV reading is lean and ASCII-only for numbers."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dnnblocks import cli

from test_cli import assert_one_line_error, run


def _data(path, n=40):
    rows = ["x,z,y"] + [f"{i * 0.5},{(i * 7) % 5},{'ab'[i % 2]}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("case", ["same", "spelling", "symlink", "out_is_data", "plot_is_data"])
def test_train_refuses_to_overwrite_its_own_files(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _data(tmp_path / "d.csv")
    before = data.read_bytes()
    out, plot = "m.npz", "m.npz"
    if case == "spelling":
        plot = "./sub/../m.npz"
        (tmp_path / "sub").mkdir()
    elif case == "symlink":
        (tmp_path / "m.npz").write_bytes(b"old")
        os.symlink(tmp_path / "m.npz", tmp_path / "link.png")
        plot = "link.png"
    elif case == "out_is_data":
        out, plot = str(data), None
    elif case == "plot_is_data":
        out, plot = "m.npz", str(data)
    argv = ["train", data, "--target", "y", "--epochs", "1", "-q", "--out", out]
    if plot:
        argv += ["--plot", plot]
    code, stdout, err = run(argv, capsys)
    assert_one_line_error(code, err, "would")
    assert stdout == ""  # refused before training printed anything
    assert data.read_bytes() == before
    if case == "symlink":
        assert (tmp_path / "m.npz").read_bytes() == b"old"
    elif case != "out_is_data":
        assert not (tmp_path / "m.npz").exists()


def test_predict_refuses_out_equal_to_model_or_data(tmp_path, capsys):
    data = _data(tmp_path / "d.csv")
    model = tmp_path / "m.npz"
    assert run(["train", data, "--target", "y", "--epochs", "1", "-q", "--out", model], capsys)[0] == 0
    saved = model.read_bytes()
    for target in (model, data):
        code, _, err = run(["predict", model, data, "--out", target], capsys)
        assert_one_line_error(code, err, "overwritten", str(target))
    assert model.read_bytes() == saved


@pytest.mark.parametrize("where", ["/proc/x/m.npz", "/proc/m.npz", "folder", "missing"])
def test_unwritable_output_fails_before_training(where, tmp_path, capsys):
    data = _data(tmp_path / "d.csv")
    out = {"folder": str(tmp_path), "missing": str(tmp_path / "no" / "m.npz")}.get(where, where)
    code, stdout, err = run(["train", data, "--target", "y", "-q", "--out", out], capsys)
    assert_one_line_error(code, err, repr(out))
    assert stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["d.csv"]


def test_huge_cell_in_a_dropped_column_under_a_memory_cap(tmp_path):
    data = tmp_path / "big.csv"
    with open(data, "w") as f:
        f.write("note,x,y\n")
        f.write(f"{'q' * 131000},0.0,a\n")
        for i in range(1, 4000):  # old reader: 4000 x 131000 x 4 B = 2 GB
            f.write(f"n{i},{i % 13},{'ab'[i % 2]}\n")
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))
        from dnnblocks import cli
        d = {str(tmp_path)!r}
        assert cli.main(["train", d + "/big.csv", "--target", "y", "--drop", "note", "--epochs", "1",
                         "-q", "--out", d + "/m.npz"]) == 0
        assert cli.main(["predict", d + "/m.npz", d + "/big.csv", "--out", d + "/p.csv"]) == 0
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 4001


def test_numeric_values_equal_loadtxt(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((50, 3)) * 10.0 ** rng.integers(-8, 8, (50, 3))
    path = tmp_path / "n.csv"
    np.savetxt(path, values, delimiter=",", header="a,b,c", comments="", fmt="%.17g")
    table = cli.read_csv(path)
    np.testing.assert_array_equal(table.numeric(["a", "b", "c"]),
                                  np.loadtxt(path, delimiter=",", skiprows=1))


@pytest.mark.parametrize("cell", ["1_000", "\u0661\u0662", "\uff11\uff12", "\u0967", "0x10", "1,5"])
def test_non_ascii_and_underscore_numbers_are_not_numbers(cell, tmp_path, capsys):
    path = tmp_path / "u.csv"
    import csv
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["x", "y"])
        w.writerows([["1", "a"], ["2", "b"], [cell, "a"], ["3", "b"]])
    code, _, err = run(["train", path, "--target", "y", "-q", "--out", tmp_path / "m.npz"], capsys)
    assert_one_line_error(code, err, "line 4", "'x'", "not a number")


def test_ascii_number_forms_still_accepted(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text("x\n 1e3 \n-.5\n+2.\n7E-2\n")
    np.testing.assert_array_equal(cli.read_csv(path).numeric(["x"])[:, 0], [1000.0, -0.5, 2.0, 0.07])


def test_latin1_byte_reported_at_its_line_and_file_offset(tmp_path, capsys):
    path = tmp_path / "l.csv"
    body = b"x,y\n" + b"".join(b"%d,a\n" % i for i in range(3000)) + b"9,caf\xe9\n"
    path.write_bytes(body)
    offset = body.index(b"\xe9")
    code, _, err = run(["train", path, "--target", "y", "-q", "--out", tmp_path / "m.npz"], capsys)
    assert_one_line_error(code, err, "not UTF-8", "line 3002", f"byte {offset}")
