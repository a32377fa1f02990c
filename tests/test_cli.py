"""The ``dnnblocks`` command: train / predict / evaluate / bench, and its error messages.

Most tests call ``dnnblocks.cli.main(argv)`` in-process (fast); the console
script ``dnnblocks`` and ``python -m dnnblocks`` are run as subprocesses from a
temporary directory at least once each.
"""

import csv
import io
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import dnnblocks
from dnnblocks import cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(argv, capsys):
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse exits on usage errors and --help
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code not in (0, None), f"expected failure, got exit status {code}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("dnnblocks"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def console_script():
    """The installed ``dnnblocks`` script beside this interpreter."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        for name in ("dnnblocks", "dnnblocks.exe"):
            candidate = Path(folder) / name
            if candidate.is_file():
                return str(candidate)
    found = shutil.which("dnnblocks")
    if found is None:
        pytest.fail("the dnnblocks console script is not installed")
    return found


# ------------------------------------------------------------------ data files
def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_fruit(path, n=240, seed=0):
    """Three fruit classes (string labels) from two far-from-standard features, plus an id column
    with commas and quotes (it exercises the CSV quoting) that must be dropped."""
    rng = np.random.default_rng(seed)
    names = np.array(["apple", "banana, ripe", "cherry"])
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    label = rng.integers(0, 3, n)
    xy = centres[label] + 0.5 * rng.standard_normal((n, 2))
    # Far from zero mean / unit scale: without standardisation training would struggle.
    weight = 1000.0 * xy[:, 0] + 5000.0
    length = 0.001 * xy[:, 1] - 2.0
    rows = [[f'id "{i}", batch {i % 7}', repr(float(w)), names[c], repr(float(ln))]
            for i, (w, c, ln) in enumerate(zip(weight, label, length))]
    write_csv(path, ["id", "weight", "fruit", "length"], rows)
    return names[label]


@pytest.fixture(scope="module")
def fruit(tmp_path_factory):
    """A trained fruit model: (folder, csv path, true labels, model path)."""
    folder = tmp_path_factory.mktemp("fruit")
    data = folder / "fruit.csv"
    labels = make_fruit(data)
    model = folder / "fruit.npz"
    code = cli.main(["train", str(data), "--target", "fruit", "--drop", "id", "--epochs", "40",
                     "--out", str(model), "--quiet"])
    assert code == 0
    return folder, data, labels, model


# ------------------------------------------------------------------ the default task
def test_console_script_trains_on_bundled_weather_from_a_new_directory(tmp_path):
    proc = subprocess.run([console_script(), "train"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Seattle weather" in out and "classes:  2 (dry, rain)" in out
    assert "features: temp_max, temp_min, wind, day_sin, day_cos" in out
    assert "1168 train / 293 test" in out
    train_acc = float(out.split("train accuracy:")[1].split()[0])
    test_acc = float(out.split("test accuracy:")[1].split()[0])
    # A logistic regression reaches about 0.78 on this task; the default network
    # must do at least nearly as well on the held-out days, and not be a coin toss.
    assert 0.74 <= test_acc <= 0.90
    assert 0.74 <= train_acc <= 0.95
    assert "confusion matrix" in out and (tmp_path / "model.npz").is_file()
    # Not a terminal: progress comes as plain lines on stderr, one per tenth of the run.
    assert "epoch 50/50" in proc.stderr and "\r" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_default_model_predicts_from_raw_weather_columns(tmp_path, capsys):
    model = tmp_path / "rain.npz"
    code, out, err = run(["train", "--epochs", "5", "--out", model, "-q"], capsys)
    assert code == 0, err
    _, extra = dnnblocks.load(model, with_extra=True)
    assert extra["recipe"] == "seattle-weather" and extra["target"] == "rain"
    # The season columns are derived from the date, as in training.
    days = write_csv(tmp_path / "days.csv", ["date", "temp_max", "temp_min", "wind"],
                     [["2016-01-10", "8.0", "3.0", "6.0"], ["2016/07/20", "29.0", "16.0", "2.0"]])
    code, out, err = run(["predict", model, days, "--proba"], capsys)
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["rain", "proba_dry", "proba_rain"]
    assert [r[0] for r in rows[1:]] == ["rain", "dry"]  # a windy January day, a hot July day
    # evaluate derives the 'rain' target from precipitation in the raw file.
    raw = tmp_path / "seattle-weather.csv"
    shutil.copy(str(dnnblocks.datasets.weather_csv_path()), raw)
    code, out, err = run(["evaluate", model, raw], capsys)
    assert code == 0, err
    assert "(1461 rows)" in out and float(out.split("accuracy:")[1].split()[0]) > 0.7


def test_python_m_dnnblocks_runs_the_cli(tmp_path, fruit):
    _, data, labels, model = fruit
    proc = subprocess.run([sys.executable, "-m", "dnnblocks", "predict", str(model), str(data)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0] == ["fruit"] and len(rows) == len(labels) + 1
    proc = subprocess.run([sys.executable, "-m", "dnnblocks", "--version"], capture_output=True,
                          text=True, timeout=300)
    assert proc.stdout.strip() == f"dnnblocks {dnnblocks.__version__}"


# ------------------------------------------------------------------ a CSV of one's own
def test_string_labels_train_predict_evaluate_with_curve(tmp_path, capsys):
    data = tmp_path / "fruit.csv"
    labels = make_fruit(data, n=300, seed=1)
    model, curve, preds = tmp_path / "m.npz", tmp_path / "curve.png", tmp_path / "p.csv"
    code, out, err = run(["train", data, "--target", "fruit", "--drop", "id", "--layers", "12,6",
                          "--epochs", "30", "--out", model, "--plot", curve], capsys)
    assert code == 0, err
    assert "classes:  3 ('apple', 'banana, ripe', 'cherry')" in out
    assert "features: weight, length" in out and "60 test rows" in out.replace("/ ", "")
    assert float(out.split("test accuracy:")[1].split()[0]) >= 0.9
    assert curve.read_bytes()[:8] == PNG_SIGNATURE and curve.stat().st_size > 5000

    code, out, err = run(["predict", model, data, "--out", preds, "--proba"], capsys)
    assert code == 0, err
    assert f"wrote {len(labels)} predictions of 'fruit' to {preds}" in out
    with open(preds, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["fruit", "proba_apple", "proba_banana, ripe", "proba_cherry"]
    predicted = np.array([r[0] for r in rows[1:]])
    proba = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert set(predicted) <= {"apple", "banana, ripe", "cherry"}  # labels, not class numbers
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    names = np.array(["apple", "banana, ripe", "cherry"])
    np.testing.assert_array_equal(names[proba.argmax(axis=1)], predicted)
    accuracy = np.mean(predicted == labels)
    assert accuracy >= 0.9

    code, out, err = run(["evaluate", model, data, "--target", "fruit"], capsys)
    assert code == 0, err
    assert f"accuracy: {accuracy:.4f}" in out
    true_p = proba[np.arange(len(labels)), np.searchsorted(names, labels)]
    assert f"log-loss: {-np.mean(np.log(true_p)):.4f}" in out
    for name in names:
        assert name in out
    assert "macro average" in out and "confusion matrix" in out
    # The confusion matrix rows add up to each class's count.
    matrix_lines = out.split("columns = predicted):\n")[1].strip().splitlines()[1:]
    counts = [sum(int(v) for v in line.split()[-3:]) for line in matrix_lines]
    assert counts == [int(np.sum(labels == n)) for n in names]


def test_standardisation_is_stored_and_reused(fruit, tmp_path, capsys):
    _, data, labels, model = fruit
    clf, extra = dnnblocks.load(model, with_extra=True)
    assert extra["feature_names"] == ["weight", "length"] and extra["target"] == "fruit"
    mean, scale = np.asarray(extra["feature_mean"]), np.asarray(extra["feature_scale"])
    # Statistics of the training rows (80% of the file): close to the whole file's.
    with open(data, newline="") as f:
        table = np.array([[float(r["weight"]), float(r["length"])] for r in csv.DictReader(f)])
    np.testing.assert_allclose(mean, table.mean(axis=0), rtol=0.05)
    np.testing.assert_allclose(scale, table.std(axis=0), rtol=0.1)
    # Column order and extra columns in the prediction file do not matter.
    shuffled = write_csv(tmp_path / "shuffled.csv", ["length", "note", "weight"],
                         [[ln, "x", w] for w, ln in table])
    code, out1, err = run(["predict", model, data], capsys)
    assert code == 0, err
    code, out2, err = run(["predict", model, shuffled], capsys)
    assert code == 0, err
    assert out1 == out2
    # The CLI's predictions are the model's on the standardised features.
    expected = clf.predict(np.ascontiguousarray((table - mean) / scale))
    assert [row[0] for row in csv.reader(io.StringIO(out1))][1:] == [str(v) for v in expected]


def test_float32_numpy_backend_sgd_full_batch(tmp_path, capsys):
    data = tmp_path / "fruit.csv"
    make_fruit(data, n=120, seed=2)
    model = tmp_path / "m.npz"
    code, out, err = run(["train", data, "--target", "fruit", "--drop", "id", "--dtype", "float32",
                          "--backend", "numpy", "--optimizer", "sgd", "--batch-size", "full",
                          "--learning-rate", "0.5", "--epochs", "50", "--test-fraction", "0",
                          "--out", model, "-q"], capsys)
    assert code == 0, err
    assert "float32, numpy backend" in out and "batch full" in out
    assert "test accuracy:  not measured" in out
    assert float(out.split("train accuracy:")[1].split()[0]) >= 0.9
    code, out, err = run(["evaluate", model, data], capsys)
    assert code == 0, err


# ------------------------------------------------------------------ mistakes
@pytest.fixture()
def files(tmp_path, fruit):
    _, data, _, model = fruit
    f = {"data": data, "model": model, "dir": tmp_path}
    f["one_class"] = write_csv(tmp_path / "one.csv", ["x", "y"], [[1, "a"], [2, "a"], [3, "a"]])
    f["text_feature"] = write_csv(tmp_path / "text.csv", ["x", "colour", "y"],
                                  [[1, "red", "a"], [2, "blue", "b"], [3, "red", "a"]])
    f["empty_cell"] = write_csv(tmp_path / "hole.csv", ["x", "y"], [[1, "a"], ["", "b"], [3, "a"]])
    f["ragged"] = tmp_path / "ragged.csv"
    f["ragged"].write_text("x,y\n1,a\n2,b,extra\n")
    f["empty"] = tmp_path / "empty.csv"
    f["empty"].write_text("")
    f["header_only"] = tmp_path / "header.csv"
    f["header_only"].write_text("x,y\n")
    f["semicolon"] = tmp_path / "semi.csv"
    f["semicolon"].write_text("x;y\n1;a\n2;b\n")
    f["binary"] = tmp_path / "binary.csv"
    f["binary"].write_bytes(b"\xff\xfe\x00\x81garbage\x00\xc3\x28")
    f["huge"] = write_csv(tmp_path / "huge.csv", ["x", "y"],
                          [[1e300 if i == 3 else i, "ab"[i % 2]] for i in range(20)])
    f["continuous"] = write_csv(tmp_path / "price.csv", ["x", "price"],
                                [[i, f"{i * 1.37:.2f}"] for i in range(100)])
    f["not_model"] = tmp_path / "arrays.npz"
    np.savez(f["not_model"], a=np.arange(3))
    f["text_model"] = tmp_path / "notes.npz"
    f["text_model"].write_text("this is not a model\n")
    f["truncated"] = tmp_path / "truncated.npz"
    f["truncated"].write_bytes(model.read_bytes()[:200])
    plain = dnnblocks.DNNClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    plain.partial_fit(np.random.default_rng(0).standard_normal((20, 2)), np.arange(20) % 2,
                      classes=[0, 1])
    f["python_model"] = tmp_path / "plain.npz"
    plain.save(f["python_model"])
    f["wrong_features"] = write_csv(tmp_path / "wrong.csv", ["weight", "height"], [[1, 2]])
    f["text_in_predict"] = write_csv(tmp_path / "textp.csv", ["weight", "length"], [[1, "long"]])
    f["new_label"] = write_csv(tmp_path / "new.csv", ["weight", "length", "fruit"],
                               [[5000, -2, "apple"], [5000, -2, "durian"]])
    return f


MISTAKES = {
    # name: (argv with {placeholders}, fragments expected in the one error line)
    "missing data file": (["train", "{dir}/nope.csv", "--target", "y"], ["nope.csv", "not found"]),
    "data is a folder": (["train", "{dir}", "--target", "y"], ["is a folder"]),
    "missing model file": (["predict", "{dir}/nope.npz", "{data}"], ["nope.npz", "not found"]),
    "no --target": (["train", "{data}"], ["--target is required", "'fruit'"]),
    "unknown target": (["train", "{data}", "--target", "colour"], ["no target column 'colour'"]),
    "unknown feature": (["train", "{data}", "--target", "fruit", "--features", "weight,size"],
                        ["no feature column 'size'"]),
    "unknown --drop": (["train", "{data}", "--target", "fruit", "--drop", "idd"], ["'idd'"]),
    "non-numeric feature": (["train", "{text_feature}", "--target", "y"],
                            ["line 2", "'colour'", "'red'", "not a number", "--drop"]),
    "id column not dropped": (["train", "{data}", "--target", "fruit"], ["'id'", "not a number"]),
    "empty feature cell": (["train", "{empty_cell}", "--target", "y"], ["line 3", "empty"]),
    "one-class target": (["train", "{one_class}", "--target", "y"], ["single class", "'a'"]),
    "feature too large": (["train", "{huge}", "--target", "y"], ["column 'x'", "too large to standardise"]),
    "diverging training (numpy backend)": (["train", "{data}", "--target", "fruit", "--drop", "id",
                                            "--backend", "numpy", "--optimizer", "sgd",
                                            "--learning-rate", "1e300", "--epochs", "2", "-q"],
                                           ["cost became", "smaller learning"]),
    "continuous target": (["train", "{continuous}", "--target", "price"], ["regression"]),
    "ragged rows": (["train", "{ragged}", "--target", "y"], ["line 3", "3 fields", "header has 2"]),
    "empty file": (["train", "{empty}", "--target", "y"], ["is empty"]),
    "header only": (["train", "{header_only}", "--target", "y"], ["no data rows"]),
    "semicolons": (["train", "{semicolon}", "--target", "y"], ["comma-separated"]),
    "not text": (["train", "{binary}", "--target", "y"], ["not UTF-8"]),
    "target as feature": (["train", "{data}", "--target", "fruit", "--features", "weight,fruit"],
                          ["includes the target"]),
    "--target without data": (["train", "--target", "y"], ["needs a DATA.csv"]),
    "npz that is not a model": (["predict", "{not_model}", "{data}"], ["arrays.npz"]),
    "text file as model": (["predict", "{text_model}", "{data}"], ["notes.npz"]),
    "truncated model": (["evaluate", "{truncated}", "{data}"], ["truncated.npz"]),
    "model saved from Python": (["predict", "{python_model}", "{data}"],
                                ["not saved by 'dnnblocks train'"]),
    "features do not match": (["predict", "{model}", "{wrong_features}"],
                              ["lacks the model's feature column(s) 'length'"]),
    "non-numeric at predict": (["predict", "{model}", "{text_in_predict}"], ["'long'", "not a number"]),
    "label the model never saw": (["evaluate", "{model}", "{new_label}"], ["'durian'", "never saw"]),
    "evaluate without target column": (["evaluate", "{model}", "{wrong_features}"], ["'length'"]),
    "output folder missing": (["train", "--out", "{dir}/no/such/dir/m.npz"], ["does not exist"]),
    "bad layers": (["train", "--layers", "20,x"], ["--layers", "20,x"]),
    "zero layer": (["train", "--layers", "20,0"], ["--layers"]),
    "zero epochs": (["train", "--epochs", "0"], ["--epochs", "at least 1"]),
    "negative learning rate": (["train", "--learning-rate", "-0.1"], ["--learning-rate"]),
    "nan learning rate": (["train", "--learning-rate", "nan"], ["--learning-rate"]),
    "test fraction 1": (["train", "--test-fraction", "1"], ["--test-fraction"]),
    "dropout 1.5": (["train", "--dropout", "1.5"], ["--dropout"]),
    "negative l2": (["train", "--l2", "-1"], ["--l2"]),
    "batch size 0": (["train", "--batch-size", "0"], ["--batch-size"]),
    "float16": (["train", "--dtype", "float16"], ["--dtype", "float16"]),
    "unknown optimizer": (["train", "--optimizer", "rmsprop"], ["--optimizer", "rmsprop"]),
    "unknown command": (["fit"], ["fit"]),
    "unknown option": (["train", "--epoch", "3", "--colour"], ["--colour"]),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_user_mistake_gives_one_line_and_nonzero_exit(name, files, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written into the repository on a wrong success
    argv, fragments = MISTAKES[name]
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    code, out, err = run(argv, capsys)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "model.npz").exists()


def test_mistake_through_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([console_script(), "predict", "missing.npz", "missing.csv"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "dnnblocks predict: error: model file 'missing.npz' not found\n"


def test_plot_without_matplotlib_fails_before_training(tmp_path):
    # A 'matplotlib' package that cannot be imported shadows the real one.
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    proc = subprocess.run([sys.executable, "-m", "dnnblocks", "train", "--plot", "c.png"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ('dnnblocks train: error: --plot: plotting needs matplotlib, which '
                                   'is not installed: pip install "dnnblocks[plot]"')
    assert proc.stdout == "" and not (tmp_path / "model.npz").exists()


def test_no_command_prints_help(capsys):
    code, out, err = run([], capsys)
    assert code == 1 and "train" in out and "predict" in out and "evaluate" in out and "bench" in out


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "zero"],  # a bad option value
    ["train", "--no-such-option"],  # an unknown option
    ["frobnicate"],  # an unknown command
    ["predict"],  # a missing argument
    ["bench", "--full", "--smoke"],  # exclusive options
    ["train", "--optimizer", "lbfgs"],  # not a choice
])
def test_option_errors_exit_1_with_one_line(argv, capsys):
    # The README: any mistake ends with exit status 1 (argparse alone exits 2).
    code, out, err = run(argv, capsys)
    assert code == 1
    assert_one_line_error(code, err, "error:", "--help")
    assert out == ""


def test_option_error_status_of_the_installed_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dnnblocks", "train", "--epochs", "-3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--epochs" in proc.stderr


def test_help_of_each_command(capsys):
    for command in ("train", "predict", "evaluate", "bench"):
        code, out, err = run([command, "--help"], capsys)
        assert code == 0 and out.startswith(f"usage: dnnblocks {command}")


# ------------------------------------------------------------------ bench
def test_bench_smoke_prints_the_table(capsys):
    code, out, err = run(["bench", "--smoke"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["shape", "dtype", "impl", "ms/step"]
    rows = [line.split() for line in lines[2:] if line.strip() and not line.startswith(("Each", "Measured"))]
    # Every smoke shape and dtype, for both backends, once each (the header is not repeated).
    for dtype in ("float64", "float32"):
        for impl in ("compiled", "numpy"):
            assert sum(r[1] == dtype and r[2] == impl for r in rows) >= 1
    assert out.count("ms/step") == 2  # header and legend
    numpy_rows = [r for r in rows if r[2] == "numpy"]
    assert all(float(r[4]) == 1.0 for r in numpy_rows)  # the baseline is 1.00x itself


# ------------------------------------------------------------------ pieces
def test_metrics_against_hand_computed_values():
    true = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 0])
    cm = cli._confusion(true, pred, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [2, 0, 0]])
    precision, recall = cli._precision_recall(cm)
    np.testing.assert_allclose(precision[:2], [1 / 3, 2 / 3])
    assert np.isnan(precision[2])  # class 2 never predicted
    np.testing.assert_allclose(recall, [0.5, 1.0, 0.0])
    proba = np.array([[0.5, 0.5], [0.0, 1.0], [0.9, 0.1]])
    assert cli._log_loss(proba, np.array([0, 1, 1])) == pytest.approx(
        -(np.log(0.5) + np.log(1.0) + np.log(0.1)) / 3)
    # A certain miss (probability 0 for the true class) is clipped at 1e-15, not infinite.
    assert cli._log_loss(proba, np.array([0, 0, 1])) == pytest.approx(
        -(np.log(0.5) + np.log(1e-15) + np.log(0.1)) / 3)


def test_metrics_agree_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    true, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    proba = rng.dirichlet(np.ones(4), 200)
    cm = cli._confusion(true, pred, 4)
    np.testing.assert_array_equal(cm, metrics.confusion_matrix(true, pred))
    precision, recall = cli._precision_recall(cm)
    np.testing.assert_allclose(precision, metrics.precision_score(true, pred, average=None))
    np.testing.assert_allclose(recall, metrics.recall_score(true, pred, average=None))
    assert cli._log_loss(proba, true) == pytest.approx(metrics.log_loss(true, proba, labels=range(4)))


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


def test_progress_plain_lines_when_not_a_terminal():
    stream = _Stream(tty=False)
    progress = cli.Progress(100, stream=stream)
    for epoch in range(1, 101):
        progress.update(epoch, 1.0 / epoch, 2.0 / epoch)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in stream.getvalue()
    assert lines[0] == "epoch  10/100  cost 0.1000  held-out 0.2000"
    assert lines[-1] == "epoch 100/100  cost 0.0100  held-out 0.0200"


def test_progress_bar_redraws_in_place_on_a_terminal():
    stream = _Stream(tty=True)
    progress = cli.Progress(4, stream=stream, width=8)
    for epoch in range(1, 5):
        progress._last_draw = 0.0  # draw every update (the bar throttles redraws in time)
        progress.update(epoch, 0.5)
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n")
    assert "\r[##------] epoch 1/4  cost 0.5000" in text
    assert "\r[########] epoch 4/4  cost 0.5000\n" in text


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_progress_bar_on_a_real_terminal(tmp_path):
    master, slave = os.openpty()
    try:
        proc = subprocess.run([console_script(), "train", "--epochs", "5"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=slave, text=True, timeout=300)
        os.close(slave)
        slave = None
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    bar = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert "\r[########################] epoch 5/5  cost " in bar and "held-out" in bar
    assert "epoch 5/5" not in proc.stdout  # results on stdout, progress on the terminal


def test_quiet_progress_writes_nothing():
    stream = _Stream(tty=True)
    cli.Progress(3, stream=stream, enabled=False).update(3, 0.1)
    assert stream.getvalue() == ""


def test_read_csv_quoting_blank_lines_and_bom(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes('\ufeffname,value\n"Smith, J.",1.5\n\n"multi\nline",2\n'.encode("utf-8"))
    table = cli.read_csv(path)
    assert table.names == ["name", "value"]
    assert list(table.columns["name"]) == ["Smith, J.", "multi\nline"]
    np.testing.assert_array_equal(table.numeric(["value"])[:, 0], [1.5, 2.0])
    assert list(table.lines) == [2, 5]


def test_stratified_split_keeps_class_proportions_and_a_training_row_per_class():
    labels = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 1)
    train, test = cli.stratified_split(labels, 0.2, np.random.default_rng(0))
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(81))
    assert list(np.unique(labels[test], return_counts=True)[1]) == [10, 6]  # 20% of a and of b
    assert "c" in labels[train]  # a class of one row stays in training
    again = cli.stratified_split(labels, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(again[0], train)  # the seed fixes the split
    train0, test0 = cli.stratified_split(labels, 0.0, np.random.default_rng(0))
    assert len(test0) == 0 and len(train0) == 81


def test_standardise_names_the_cell_that_overflows_the_model_dtype():
    X = np.array([[1.0, 2.0], [3.0, 1e300]])
    mean, scale = np.zeros(2), np.ones(2)
    ok = cli._standardise(X, mean, scale, np.float64, ["a", "b"], lines=np.array([2, 3]))
    assert ok.dtype == np.float64 and ok.flags.c_contiguous and ok[1, 1] == 1e300
    with pytest.raises(cli.CLIError, match="line 3: column 'b' holds 1e\\+300, too far outside"):
        cli._standardise(X, mean, scale, np.float32, ["a", "b"], lines=np.array([2, 3]))
    with pytest.raises(cli.CLIError, match="column 'b' holds values too large to standardise"):
        cli._fit_standardisation(np.array([[1.0, -1e300], [2.0, 1e300]]), ["a", "b"])
    mean, scale = cli._fit_standardisation(np.array([[1.0, 7.0], [3.0, 7.0]]), ["a", "b"])
    np.testing.assert_array_equal(mean, [2.0, 7.0])
    np.testing.assert_array_equal(scale, [1.0, 1.0])  # a constant column is not divided by 0


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
def test_ctrl_c_during_training_exits_130_without_a_traceback_or_a_model_file(tmp_path):
    import signal

    out = tmp_path / "model.npz"
    # A shell that starts a job in the background (as CI runners may) makes it
    # ignore SIGINT, and children inherit that: the child gets the default back.
    proc = subprocess.Popen([sys.executable, "-m", "dnnblocks", "train", "--epochs", "100000",
                             "--out", str(out)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # The header ends with the "network:" line, printed just before training starts.
        for line in proc.stdout:
            if line.startswith("network:"):
                break
        else:
            pytest.fail(f"training never started: {proc.stderr.read()}")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert stderr.strip() == "dnnblocks train: interrupted"
    assert not out.exists()


# ------------------------------------------------- no scikit-learn in the CLI
def _modules_after(argv, cwd):
    """Run ``cli.main(argv)`` in a fresh interpreter; return (status, stderr, sklearn imported?)."""
    code = ("import sys\nfrom dnnblocks import cli\nstatus = cli.main(sys.argv[1:])\n"
            "print('SKLEARN' if any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules)"
            " else 'NO-SKLEARN')\nsys.exit(status)\n")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr, proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    pytest.importorskip("sklearn")  # without it installed, the check below cannot fail
    folder = tmp_path_factory.mktemp("nosk")
    rows = ["a,b,y"] + [f"{i % 7},{(i * 3) % 5},{'xy'[i % 2]}" for i in range(60)]
    (folder / "d.csv").write_text("\n".join(rows) + "\n")
    code = cli.main(["train", str(folder / "d.csv"), "--target", "y", "--epochs", "2", "-q",
                     "--out", str(folder / "m.npz")])
    assert code == 0
    return folder


@pytest.mark.parametrize("command", [
    "train",
    "predict",
    "evaluate",
    "bench",
])
def test_the_command_line_never_imports_sklearn(command, small_model):
    argv = {
        "train": ["train", "d.csv", "--target", "y", "--epochs", "1", "-q", "--out", "m2.npz"],
        "predict": ["predict", "m.npz", "d.csv", "--out", "p.csv"],
        "evaluate": ["evaluate", "m.npz", "d.csv"],
        "bench": ["bench", "--smoke"],
    }[command]
    status, err, seen = _modules_after(argv, small_model)
    assert status == 0, err
    assert seen == "NO-SKLEARN"
