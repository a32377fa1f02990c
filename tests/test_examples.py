"""The scripts in examples/ run, and say what they should."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import data_dir

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cat_vs_noncat.py"


def run_example(*args, cwd):
    return subprocess.run([sys.executable, str(EXAMPLE), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_cat_vs_noncat_short_run_prints_course_costs_accuracy_and_times(tmp_path):
    folder = data_dir()
    if folder is None:
        pytest.skip("catvnoncat.npz not found in ../shared/data nor in $DNNBLOCKS_DATA")
    proc = run_example(folder / "catvnoncat.npz", "--iterations", "101", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for backend in ("compiled", "numpy"):
        section = out.split(f"--- backend: {backend}")[1].split("--- ")[0]
        # The course notebook's published costs at iterations 0 and 100.
        costs = dict(line.split(": ") for line in section.splitlines()
                     if line.startswith("Cost after iteration"))
        assert float(costs["Cost after iteration 0"]) == pytest.approx(0.7717493284237686, abs=1e-9)
        assert float(costs["Cost after iteration 100"]) == pytest.approx(0.6720534400822914, abs=1e-9)
        assert "train accuracy:" in section and "test accuracy:" in section
        assert f"{backend}:" in out.split("--- time per backend")[1]


def test_cat_vs_noncat_default_path_is_beside_the_repository():
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import cat_vs_noncat
    finally:
        sys.path.pop(0)
    assert cat_vs_noncat.DEFAULT_PATH == EXAMPLE.parents[2] / "shared" / "data" / "catvnoncat.npz"


def test_cat_vs_noncat_missing_file_explains_where_to_get_it(tmp_path):
    proc = run_example(tmp_path / "nowhere.npz", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "data file not found" in proc.stderr and "nowhere.npz" in proc.stderr
    assert "train_catvnoncat.h5" in proc.stderr and "np.savez_compressed" in proc.stderr


def test_weather_splits_repeats_what_dnnblocks_train_does(tmp_path):
    script = EXAMPLE.parent / "weather_splits.py"
    proc = subprocess.run([sys.executable, str(script), "--splits", "2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line[:4].strip().isdigit()]
    assert [r[0] for r in rows] == ["0", "1"]
    assert "mean and standard deviation over 2 splits" in proc.stdout
    # Seed 0 is exactly the run `dnnblocks train` prints.
    cli = subprocess.run([sys.executable, "-m", "dnnblocks", "train", "-q", "--out", "m.npz"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr
    train_acc = cli.stdout.split("train accuracy:")[1].split()[0]
    test_acc = cli.stdout.split("test accuracy:")[1].split()[0]
    assert rows[0][1:3] == [train_acc, test_acc]
