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


# ------------------------------------------------- CSV: NumPy fast path
def _both_readers(tmp_path, header, rows):
    """The same table as a plain file (line-split, NumPy) and a quoted one (csv module)."""
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\n", encoding="utf-8")
    quoted = tmp_path / "quoted.csv"
    # One quoted header name is enough to send the file through the csv module.
    quoted.write_text("\n".join([",".join([f'"{header[0]}"'] + header[1:])] + [",".join(r) for r in rows])
                      + "\n", encoding="utf-8")
    return plain, quoted


def _message(path, call):
    with pytest.raises(cli.CLIError) as info:
        call(cli.read_csv(path))
    return str(info.value).replace(str(path), "FILE")


def test_plain_and_quoted_files_read_the_same(tmp_path):
    rng = np.random.default_rng(1)
    rows = [[f"{v:.17g}" for v in rng.standard_normal(3)] + ["ab"[i % 2]] for i in range(200)]
    rows.insert(50, [" ", "", "  ", ""])  # a blank row: skipped by both
    plain, quoted = _both_readers(tmp_path, ["a", "b", "c", "y"], rows)
    p, q = cli.read_csv(plain), cli.read_csv(quoted)
    assert p.names == q.names == ["a", "b", "c", "y"]
    assert list(p.lines) == list(q.lines) and p.lines[50] == 53  # line 52 was the blank row
    np.testing.assert_array_equal(p.numeric(["c", "a"]), q.numeric(["c", "a"]))
    expected = [[float(r[2]), float(r[0])] for r in rows if r[0].strip()]
    np.testing.assert_array_equal(p.numeric(["c", "a"]), expected)
    assert list(p.labels("y")) == list(q.labels("y"))
    assert list(p.columns["b"]) == list(q.columns["b"])


@pytest.mark.parametrize("bad, fragment", [
    ("1_000", "holds '1_000', not a number"),
    ("\u0661", "not a number"),
    ("\xa01", "holds '\\xa01', not a number"),  # NumPy alone would read 1 (it strips Unicode blanks)
    ("1\u2003", "not a number"),
    ("1\x0c", "not a number"),  # a form feed: the csv-module path
    ("", "is empty"),
    ("   ", "is empty"),
    ("inf", "finite numbers"),
    ("nan", "finite numbers"),
    ("1e999", "finite numbers"),
    ("q" * 5000, "(5000 characters), not a number"),
])
def test_fast_path_messages_match_the_cell_by_cell_reader(tmp_path, bad, fragment):
    rows = [[str(i), f"{i * 0.25}", "ab"[i % 2]] for i in range(300)]
    rows[200][1] = bad
    rows[250][0] = "oops"  # later row, earlier column: column order comes first
    plain, quoted = _both_readers(tmp_path, ["x", "z", "y"], rows)
    message = _message(plain, lambda t: t.numeric(["z", "x"]))
    assert message == _message(quoted, lambda t: t.numeric(["z", "x"]))
    assert message.startswith("FILE, line 202: column 'z' ") and fragment in message
    # The other column is reported once the first one is dropped.
    assert _message(plain, lambda t: t.numeric(["x"])).startswith("FILE, line 252: column 'x' holds 'oops'")


def test_ragged_rows_and_line_numbers_on_the_fast_path(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"x,y\r\n1,a\r\n\r\n , \r\n2,b\r\n3,a,extra\r\n")
    with pytest.raises(cli.CLIError, match=r"line 6: 3 fields, but the header has 2"):
        cli.read_csv(path)
    path.write_bytes(b"x,y\r\n1,a\r\n\r\n , \r\n2,b\r\n")
    table = cli.read_csv(path)
    assert list(table.lines) == [2, 5] and list(table.labels("y")) == ["a", "b"]
    np.testing.assert_array_equal(table.numeric(["x"])[:, 0], [1.0, 2.0])


def test_last_middle_and_first_columns_split_alike(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("a,b,c,d,e\n" + "".join(f"a{i},b{i},c{i},d{i},e{i}\n" for i in range(5)))
    table = cli.read_csv(path)
    for name in "abcde":
        assert list(table.columns[name]) == [f"{name}{i}" for i in range(5)]


def test_reading_stays_small_with_a_huge_cell(tmp_path):
    # The 167 KB file of issue 14: one 131,000-character cell. Reading it,
    # parsing the numeric column and refusing the huge cell as a feature must
    # fit in 64 MiB more address space than the interpreter already has.
    data = tmp_path / "big.csv"
    with open(data, "w") as f:
        f.write("note,x,y\n")
        f.write(f"{'q' * 131000},0.0,a\n")
        for i in range(1, 4000):
            f.write(f"n{i},{i % 13},{'ab'[i % 2]}\n")
    assert 160_000 < data.stat().st_size < 175_000
    code = textwrap.dedent(f"""
        import resource
        from dnnblocks import cli
        with open("/proc/self/status") as f:
            size = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        cap = size + 64 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        table = cli.read_csv({str(data)!r})
        x = table.numeric(["x"])
        assert x.shape == (4000, 1) and x[5, 0] == 5.0
        assert list(table.labels("y")[:3]) == ["a", "b", "a"]
        try:
            table.numeric(["note", "x"])
        except cli.CLIError as exc:
            assert "line 2: column 'note' holds 'qqq" in str(exc) and "(131000 characters)" in str(exc)
        else:
            raise AssertionError("the text column was read as numbers")
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize("dangling", [False, True], ids=["to_a_file", "dangling"])
def test_train_refuses_a_model_path_that_is_a_symlink_before_training(tmp_path, capsys, dangling):
    data = _data(tmp_path / "d.csv")
    target = tmp_path / "real.npz"
    if not dangling:
        target.write_bytes(b"old")
    os.symlink(target, tmp_path / "link.npz")
    code, stdout, err = run(["train", data, "--target", "y", "-q", "--epochs", "1",
                             "--out", tmp_path / "link.npz"], capsys)
    assert_one_line_error(code, err, "link.npz", "symbolic link", "real.npz")
    assert stdout == ""
    assert (tmp_path / "link.npz").is_symlink()
    assert target.read_bytes() == b"old" if not dangling else not target.exists()
