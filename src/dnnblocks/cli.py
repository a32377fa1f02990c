"""The ``dnnblocks`` command: train, predict, evaluate and bench from the shell.

Every mistake a user can make (a missing file, an unknown column, a
non-numeric feature, a one-class target, a model file of the wrong kind,
features that do not match the model, a bad option value) ends with one line
on stderr and a non-zero exit status, never a traceback. Set the environment
variable ``DNNBLOCKS_DEBUG=1`` to get the traceback anyway.

CSV files without quotes (the common case) are split into lines and their
numeric columns parsed by :func:`numpy.loadtxt` in one call; a cell NumPy
refuses is found again by the cell-by-cell check, which names its line,
column and text. Files with quotes are read by the standard library's
:mod:`csv` module (quoting, embedded commas and newlines).
"""

import argparse
import csv
import io
import itertools
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from . import benchmark
from .model_file import check_save_target, package_version
from ._estimator_base import DNNClassifierBase
from .datasets import WEATHER_INPUT_COLUMNS, load_weather, weather_features
from .model_io import export_model_file, load_as
from .onnx_export import require_onnx

__all__ = ["CLIError", "DEFAULTS", "build_parser", "main", "read_csv", "stratified_split"]

#: Model-file metadata version written by ``dnnblocks train``.
CLI_FORMAT = 1

#: The default architecture and training settings (chosen on the bundled
#: weather task; see README.md "The default task").
DEFAULTS = {
    "layers": (32, 16),
    "activation": "relu",
    "optimizer": "adam",
    "epochs": 50,
    "batch_size": 32,
    "learning_rate": 0.001,
    "l2": 0.01,
    "dropout": 0.0,
    "test_fraction": 0.2,
    "seed": 0,
    "dtype": "float64",
    "out": "model.npz",
}

_WEATHER_RECIPE = "seattle-weather"


class CLIError(Exception):
    """A mistake in the command line or the data: reported as one line, exit status 1."""


# ---------------------------------------------------------------- argument parsing
#: The exit status of every mistake, option errors included (argparse's own is 2).
_ERROR_STATUS = 1


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 1, as for every other mistake.

    argparse's own prints the usage block first and exits with status 2.
    """

    def error(self, message):
        self.exit(_ERROR_STATUS, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def _float_in(low, high=None, low_open=False, high_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
        if not ok:
            lo = f"{'(' if low_open else '['}{low:g}"
            hi = f"{high:g}{')' if high_open else ']'}" if high is not None else "inf)"
            raise argparse.ArgumentTypeError(f"must be in {lo}, {hi}, got {text}")
        return value
    return parse


def _layers(text):
    """'20,7,5' -> (20, 7, 5); '' or 'none' -> () (no hidden layer: logistic regression)."""
    if text.strip().lower() in ("", "none"):
        return ()
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(
                f"expected hidden-layer sizes as positive integers separated by commas "
                f"(like 20,7,5), got {text!r}"
            )
        sizes.append(int(part))
    return tuple(sizes)


def _batch_size(text):
    if text.strip().lower() == "full":
        return None
    return _int_at_least(1)(text)


def _names(text):
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, got {text!r}")
    return names


def build_parser():
    """The argparse parser of the ``dnnblocks`` command (exposed for documentation tools)."""
    d = DEFAULTS
    parser = _Parser(
        prog="dnnblocks",
        description="Train, use and evaluate a deep fully connected classifier on a CSV table.",
        epilog="Run 'dnnblocks train' with no file to train on the bundled Seattle weather data "
               "(did it rain?). 'dnnblocks COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"dnnblocks {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # -- train
    p = sub.add_parser(
        "train", help="train a classifier on a CSV file (or the bundled weather data)",
        description="Train a classifier on a CSV file with a header row: numeric feature columns "
                    "and a target column of class labels (any labels; strings stay strings). "
                    "Features are standardised with statistics of the training part, which are "
                    "stored in the model file. With no DATA, trains on the bundled Seattle "
                    "weather record 2012-2015: did it rain that day?",
    )
    p.add_argument("data", nargs="?", metavar="DATA.csv",
                   help="the table to learn from (default: the bundled weather data)")
    p.add_argument("--target", metavar="COLUMN", help="the column to predict (required with DATA)")
    cols = p.add_mutually_exclusive_group()
    cols.add_argument("--features", type=_names, metavar="A,B,...",
                      help="feature columns (default: every column except the target)")
    cols.add_argument("--drop", type=_names, metavar="A,B,...", default=[],
                      help="columns to leave out of the features: an id, a date, text")
    net = p.add_argument_group("network and training")
    net.add_argument("--layers", type=_layers, default=d["layers"], metavar="N1,N2,...",
                     help=f"hidden-layer sizes; 'none' for no hidden layer, i.e. logistic "
                          f"regression (default: {','.join(map(str, d['layers']))})")
    net.add_argument("--activation", choices=("relu", "tanh", "sigmoid"), default=d["activation"],
                     help=f"hidden-layer activation (default: {d['activation']})")
    net.add_argument("--optimizer", choices=("adam", "momentum", "sgd"), default=d["optimizer"],
                     help=f"sgd is plain gradient descent (default: {d['optimizer']})")
    net.add_argument("--epochs", type=_int_at_least(1), default=d["epochs"], metavar="N",
                     help=f"passes over the training rows (default: {d['epochs']})")
    net.add_argument("--batch-size", type=_batch_size, default=d["batch_size"], metavar="B",
                     help=f"examples per gradient step; 'full' for full-batch gradient descent "
                          f"(default: {d['batch_size']})")
    net.add_argument("--learning-rate", type=_float_in(0, low_open=True), default=d["learning_rate"],
                     metavar="ALPHA", help=f"(default: {d['learning_rate']:g})")
    net.add_argument("--l2", type=_float_in(0), default=d["l2"], metavar="LAMBDA",
                     help=f"L2 regularisation strength (default: {d['l2']:g})")
    net.add_argument("--dropout", type=_float_in(0, 1, high_open=True), default=d["dropout"],
                     metavar="P", help=f"probability of dropping a hidden unit during training "
                                       f"(default: {d['dropout']:g})")
    net.add_argument("--test-fraction", type=_float_in(0, 1, high_open=True),
                     default=d["test_fraction"], metavar="F",
                     help=f"fraction of rows held out for testing, stratified by class; 0 for none "
                          f"(default: {d['test_fraction']:g})")
    net.add_argument("--seed", type=_int_at_least(0), default=d["seed"], metavar="S",
                     help=f"seeds the split, the initialisation and the shuffling (default: {d['seed']})")
    net.add_argument("--dtype", choices=("float32", "float64"), default=d["dtype"],
                     help=f"(default: {d['dtype']})")
    net.add_argument("--backend", choices=("compiled", "numpy"), default="compiled",
                     help="compiled (Cython over BLAS) or numpy (the reference) (default: compiled)")
    out = p.add_argument_group("output")
    out.add_argument("--out", default=d["out"], metavar="MODEL.npz",
                     help=f"where to save the model (default: {d['out']})")
    out.add_argument("--plot", metavar="CURVE.png",
                     help="write the learning curve (cost per epoch on the training and the "
                          "held-out rows) as an image; needs matplotlib")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train)

    # -- predict
    p = sub.add_parser(
        "predict", help="predict the class of every row of a CSV file",
        description="Apply a model saved by 'dnnblocks train' to every row of a CSV file that has "
                    "the model's feature columns (other columns are ignored). Writes a CSV with "
                    "one prediction per row, in the target's own labels.",
    )
    p.add_argument("model", metavar="MODEL.npz", help="a model saved by 'dnnblocks train'")
    p.add_argument("data", metavar="DATA.csv", help="a CSV file with the model's feature columns")
    p.add_argument("--out", metavar="PREDICTIONS.csv", help="output file (default: standard output)")
    p.add_argument("--proba", action="store_true",
                   help="add one column per class with its probability")
    p.set_defaults(func=cmd_predict)

    # -- evaluate
    p = sub.add_parser(
        "evaluate", help="score a model on a labelled CSV file",
        description="Accuracy, precision and recall per class (and their macro average), "
                    "log-loss and the confusion matrix of a saved model on a labelled CSV file.",
    )
    p.add_argument("model", metavar="MODEL.npz", help="a model saved by 'dnnblocks train'")
    p.add_argument("data", metavar="DATA.csv",
                   help="a CSV file with the model's feature columns and the true labels")
    p.add_argument("--target", metavar="COLUMN",
                   help="the column with the true labels (default: the model's target column)")
    p.set_defaults(func=cmd_evaluate)

    # -- export
    p = sub.add_parser(
        "export", help="convert a saved model to ONNX",
        description="Write a model saved by 'dnnblocks train' as an ONNX graph that reads the raw "
                    "feature columns (the standardisation stored in the model is part of the "
                    "graph) and outputs the class probabilities and the predicted label. Needs the "
                    "onnx package (the 'onnx' extra).",
    )
    p.add_argument("model", metavar="MODEL.npz", help="a model saved by 'dnnblocks train'")
    p.add_argument("out", metavar="MODEL.onnx", help="the ONNX file to write")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="the graph's floating-point type (default: the model's own)")
    p.set_defaults(func=cmd_export)

    # -- bench
    p = sub.add_parser(
        "bench", help="time the compiled kernels against NumPy (quick setting)",
        description="Time one training step of the compiled backend against the NumPy backend "
                    "and the matrix products alone (the GEMM bound) on a quick setting, and print "
                    "the table. More options: python -m dnnblocks.benchmark --help; the comparison "
                    "with the textbook code, PyTorch and JAX, with memory probes and charts, is "
                    "bench/train_step.py in the source repository.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true",
                      help="the full measurement: more repeats, longer batches (minutes)")
    size.add_argument("--smoke", action="store_true",
                      help="tiny shapes, one repeat: checks that everything runs (timings mean nothing)")
    p.set_defaults(func=cmd_bench)
    return parser


# ---------------------------------------------------------------- reading data
class Table:
    """A CSV file as named columns.

    The rows of a plain file (no quotes, no control characters) stay lines of
    text until a column is asked for: :meth:`numeric` parses the named
    columns with NumPy in one call, and a column's cells (a list of str) are
    split out only when read through ``columns``. A quoted file is read by
    the standard library's :mod:`csv` module into lists of cells. Neither
    path builds a NumPy string array, which would be as wide as the column's
    longest cell in every row (one 131,000-character cell in 1,000 rows:
    0.5 GB), even for a column that is then dropped.

    Attributes
    ----------
    path : str
    names : list of str
        Header, in file order.
    columns : mapping of str -> sequence of str
        The cells of each column (split from the rows on first access);
        columns derived by the command (the weather recipe) are added to it.
    lines : ndarray of int
        The file line of each row, for messages.
    """

    def __init__(self, path, names, columns, lines, rows=None):
        self.path = path
        self.names = names
        self.columns = _Columns(names, rows, columns)
        self.lines = lines

    @property
    def n_rows(self):
        return len(self.lines)

    def require(self, names, role):
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise CLIError(
                f"{self.path} has no {role} column {_quoted(missing)}; its columns are {_quoted(self.names)}"
            )

    def numeric(self, names, hint=""):
        """The named columns as a float64 (n_rows, len(names)) array; one clear error otherwise.

        Only the named columns are converted, so an unused column (an id,
        free text) costs nothing beyond its text. The columns of a plain file
        are parsed by NumPy in one call; any cell NumPy refuses (or a
        non-finite value, or a non-ASCII row NumPy may have read more
        leniently than the rules below) sends the columns through the
        cell-by-cell check, which names the first offending cell.
        """
        self.require(names, "feature")
        X = self.columns.parse_numbers(names)
        if X is not None:
            return X
        return self._numeric_cells(names, hint)

    def _numeric_cells(self, names, hint):
        out = np.empty((self.n_rows, len(names)), dtype=np.float64)
        self.columns.split(names)
        for j, name in enumerate(names):
            text = self.columns[name]
            col = out[:, j]
            match = _NUMBER.fullmatch
            for i, cell in enumerate(text):
                cell = str(cell)
                # float() alone would also take '1_000' and non-ASCII digits
                # ('\u0661', full-width '\uff11'): a CSV number is ASCII only.
                if match(cell) is None:
                    if cell.strip() == "":
                        raise CLIError(
                            f"{self.path}, line {self.lines[i]}: column {name!r} is empty; dnnblocks does "
                            f"not fill in missing values (drop or fill those rows first)"
                        )
                    raise CLIError(
                        f"{self.path}, line {self.lines[i]}: column {name!r} holds {_shown(cell)}, "
                        f"not a number; features must be numeric{hint}"
                    )
                col[i] = float(cell)
            bad = ~np.isfinite(col)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise CLIError(
                    f"{self.path}, line {self.lines[i]}: column {name!r} holds {_shown(str(text[i]))}; "
                    f"features must be finite numbers (drop or fill those rows first)"
                )
        return out

    def labels(self, name):
        """The named column's stripped cells as an object array of str (no fixed-width copy)."""
        self.require([name], "target")
        labels = np.empty(self.n_rows, dtype=object)
        labels[:] = [str(v).strip() for v in self.columns[name]]
        empty = labels == ""
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise CLIError(f"{self.path}, line {self.lines[i]}: the target column {name!r} is empty")
        return labels


class _Columns(dict):
    """The cells of a table's columns, split from its rows (lines of text) when first read.

    ``rows`` is None for a file read by the csv module: then every column is
    given, as a list of cells, in ``columns``.
    """

    def __init__(self, names, rows, columns):
        super().__init__(columns)
        self._index = {name: k for k, name in enumerate(names)}
        self._rows = rows

    def __contains__(self, name):
        return dict.__contains__(self, name) or (self._rows is not None and name in self._index)

    def __missing__(self, name):
        if self._rows is None or name not in self._index:
            raise KeyError(name)
        self.split([name])
        return dict.__getitem__(self, name)

    def split(self, names):
        """Split the cells of `names` (those not split yet) out of the rows, in one pass."""
        todo = [n for n in dict.fromkeys(names) if not dict.__contains__(self, n) and n in self._index]
        if not todo or self._rows is None:
            return
        if len(todo) == 1:
            self[todo[0]] = self._cells(self._index[todo[0]])
            return
        index = [self._index[n] for n in todo]
        cells = [[] for _ in todo]
        for row in self._rows:
            fields = row.split(",")
            for out, k in zip(cells, index):
                out.append(fields[k])
        for name, column in zip(todo, cells):
            self[name] = column

    def _cells(self, k):
        """Column `k`'s cells, splitting each row only as far as that column (from the nearer end)."""
        width = len(self._index)
        if k == width - 1:
            return [row.rpartition(",")[2] for row in self._rows]
        if k < width / 2:
            return [row.split(",", k + 1)[k] for row in self._rows]
        return [row.rsplit(",", width - k)[1] for row in self._rows]

    def parse_numbers(self, names):
        """`names` parsed by ``np.loadtxt`` from the rows; None when the cell check must decide."""
        if self._rows is None or any(dict.__contains__(self, n) for n in names):
            return None  # a csv-module file, or a column derived by the command
        usecols = [self._index[n] for n in names]
        try:
            X = np.loadtxt(self._rows, dtype=np.float64, delimiter=",", comments=None, quotechar=None,
                           usecols=usecols, ndmin=2, encoding=None)
        except ValueError:  # a cell that is not a number: the cell check names it
            return None
        if X.shape != (len(self._rows), len(names)) or not np.isfinite(X).all():
            return None
        # NumPy strips any Unicode blank around a number ('\xa01' reads as 1);
        # the rules allow only spaces and tabs: rows with non-ASCII text have
        # their cells checked against them.
        match = _NUMBER.fullmatch
        for row in self._rows:
            if not row.isascii():
                fields = row.split(",")
                if any(match(fields[k]) is None for k in usecols):
                    return None
        return X


#: The number forms a CSV cell may take: ASCII decimal with an optional
#: exponent, inf / infinity / nan (rejected later as not finite, with their
#: own message), surrounding blanks allowed as float() allows them.
_NUMBER = re.compile(
    r"[ \t]*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)[ \t]*",
    re.ASCII | re.IGNORECASE,
)

#: The bytes of a file the line-splitting reader reads as the csv module
#: would: everything but a quote and the control characters (a lone carriage
#: return, NUL, form feed...; tab and newline are ordinary). A file with any
#: other byte is read by the csv module.
_PLAIN_BYTES = bytes([9, 10, *range(32, 34), *range(35, 127), *range(128, 256)])


def _shown(cell, limit=60):
    """repr of a cell for a message, shortened: one line even for a 100 kB cell."""
    text = repr(cell)
    return text if len(text) <= limit else text[: limit - 5] + "...'" + f" ({len(cell)} characters)"


def _quoted(names):
    return ", ".join(repr(str(n)) for n in names)


def read_csv(path):
    """Read a comma-separated file with a header row into a :class:`Table`.

    Quoting, embedded commas and newlines in quoted fields and a UTF-8
    byte-order mark are read as the standard library's :mod:`csv` module
    reads them; blank lines are skipped.

    Raises
    ------
    CLIError
        For a missing, empty, non-text or ragged file, or a bad header.
    """
    path = _input_file(path, "data file")
    with open(path, "rb") as f:
        raw = f.read()
    if b"\r" in raw:
        plain = raw.replace(b"\r\n", b"\n")
        is_plain = not plain.translate(None, _PLAIN_BYTES)
    else:
        is_plain = not raw.translate(None, _PLAIN_BYTES)
        plain = raw if is_plain else None
    try:
        text = (plain if is_plain else raw).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CLIError(f"{path} is not UTF-8 text ({_bad_utf8_position(path)}); is it a CSV file?") from None
    del raw, plain
    if is_plain:
        header, rows, lines = _split_plain(path, text)
        columns = {}
    else:
        header, columns, lines = _read_with_csv(path, text)
        rows = None
    del text
    width = len(header)
    if width == 1 and any(sep in header[0] for sep in ";\t|"):
        raise CLIError(f"{path}: the header {header[0]!r} is one column; dnnblocks reads "
                       f"comma-separated files")
    if "" in header:
        raise CLIError(f"{path}: column {header.index('') + 1} of the header has no name")
    seen = set()
    for name in header:
        if name in seen:
            raise CLIError(f"{path}: the header names column {name!r} twice")
        seen.add(name)
    if not lines:
        raise CLIError(f"{path} has a header but no data rows")
    return Table(str(path), header, columns, np.array(lines, dtype=np.int64), rows)


def _split_plain(path, text):
    """Header, data rows (lines of text) and their line numbers of a file without quotes."""
    all_lines = text.split("\n")
    if all_lines[-1] == "":
        all_lines.pop()  # the final newline ends the last row; it starts none
    if not all_lines:
        raise CLIError(f"{path} is empty; expected a header row, then one row per example")
    # An empty first line is a header of no columns, as the csv module reads it.
    header = [h.strip() for h in all_lines[0].split(",")] if all_lines[0] else []
    commas = len(header) - 1
    rows, lines = [], []
    for number, row in enumerate(all_lines[1:], start=2):
        # A blank row (only blanks and commas) is skipped, as the csv module's
        # reader skips it. The only ASCII blanks of a plain file are spaces
        # and tabs; Unicode ones (a no-break space) need the general test.
        if not row.strip(" \t,") or (not row.isascii() and not row.replace(",", "").strip()):
            continue
        count = row.count(",")
        if count != commas:
            raise _ragged(path, number, count + 1, commas + 1)
        rows.append(row)
        lines.append(number)
    return header, rows, lines


def _ragged(path, line, fields, width):
    return CLIError(f"{path}, line {line}: {fields} fields, but the header has {width}")


def _read_with_csv(path, text):
    """Header, columns (lists of cells) and line numbers of a file read by the csv module."""
    lines, rows = [], []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise CLIError(f"{path} is empty; expected a header row, then one row per example")
        header = [h.strip() for h in header]
        width = len(header)
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            if len(row) != width:
                raise _ragged(path, reader.line_num, len(row), width)
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise CLIError(f"{path}, line {reader.line_num}: {exc}") from None
    columns = {name: list(cells) for name, cells in zip(header, zip(*rows))}
    return header, columns, lines


def _bad_utf8_position(path):
    """'line L, byte B' of the first byte that is not UTF-8, counted in the whole file.

    The decoder's own offset counts from the start of its current buffer, not
    of the file, so it is found again here, one line at a time (bounded memory).
    """
    offset = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}, byte {offset + exc.start}"
            offset += len(line)
    return "a multi-byte character cut at the end"


def _input_file(path, what):
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{what} {str(path)!r} not found")
    if p.is_dir():
        raise CLIError(f"{what} {str(path)!r} is a folder, not a file")
    return p


def _output_file(path, what, follow_links=True):
    """Check that `path` can be written before doing the work that produces it.

    Permission bits say nothing for root, and nothing about /proc or a
    read-only mount, so a file that does not exist yet is created and removed
    again (nothing is left behind); an existing file is opened for appending,
    which does not change it. With ``follow_links=False`` (the model file,
    which saving never writes through a link) a symbolic link is refused.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise CLIError(f"{what} {str(path)!r} is a folder; give a file name")
    if not follow_links and p.is_symlink():
        raise CLIError(f"{what} {str(path)!r} is a symbolic link (to {os.readlink(p)!r}); give the "
                       f"file it points to, or remove the link")
    if not parent.is_dir():
        raise CLIError(f"cannot write {what} {str(path)!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise CLIError(f"cannot write {what} {str(path)!r}: folder {str(parent)!r} is not writable")
    try:
        if p.exists():
            if not p.is_file():
                raise CLIError(f"cannot write {what} {str(path)!r}: it is not a regular file")
            with open(p, "ab"):
                pass
        else:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            os.close(fd)
            os.unlink(p)
    except OSError as exc:
        raise CLIError(f"cannot write {what} {str(path)!r}: {exc.strerror or _one_line(exc)}") from None
    return p


def _same_file(a, b):
    """Whether paths `a` and `b` name one file (same spelling, a symlink or a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samestat(os.stat(a), os.stat(b))
    except OSError:  # one of them does not exist yet: realpath settled it
        return False


def _check_distinct(inputs, outputs):
    """Refuse a command that would write over one of its own inputs or outputs.

    Parameters
    ----------
    inputs, outputs : list of (option, path or None)
        ``("DATA.csv", "x.csv")``, ``("--out", "m.npz")``; None entries are skipped.
    """
    inputs = [(o, p) for o, p in inputs if p is not None]
    outputs = [(o, p) for o, p in outputs if p is not None]
    for k, (option, path) in enumerate(outputs):
        for other, source in inputs:
            if _same_file(path, source):
                raise CLIError(f"{option} {str(path)!r} is the input {other} {str(source)!r}; "
                               f"it would be overwritten; choose another file name")
        for other, target in outputs[:k]:
            if _same_file(path, target):
                raise CLIError(f"{option} {str(path)!r} and {other} {str(target)!r} are the same "
                               f"file; one would overwrite the other; give each its own name")


# ---------------------------------------------------------------- the default task
def _weather_columns(table):
    """Add the rain task's derived columns (season, 'rain') to a table of the raw weather CSV."""

    if "day_sin" not in table.columns and all(c in table.columns for c in WEATHER_INPUT_COLUMNS):
        raw = table.numeric(["temp_max", "temp_min", "wind"])
        try:
            X = weather_features(table.columns["date"], raw[:, 0], raw[:, 1], raw[:, 2])
        except ValueError as exc:
            raise CLIError(f"{table.path}: {exc}") from None
        table.columns["day_sin"] = X[:, 3].astype(str)
        table.columns["day_cos"] = X[:, 4].astype(str)
    if "rain" not in table.columns and "precipitation" in table.columns:
        rained = table.numeric(["precipitation"])[:, 0] > 0
        table.columns["rain"] = np.where(rained, "rain", "dry")


def _load_default_task():

    X, y, names = load_weather()
    labels = np.where(y == 1, "rain", "dry")
    return X, labels, names, "rain"


# ---------------------------------------------------------------- metrics
def _log_loss(proba, y_index):
    """Mean cross-entropy of the true classes; probabilities clipped at 1e-15 so a confident miss is finite."""
    p = np.asarray(proba, dtype=np.float64)[np.arange(len(y_index)), y_index]
    return float(-np.mean(np.log(np.clip(p, 1e-15, 1.0))))


def _confusion(true_index, pred_index, k):
    return np.bincount(true_index * k + pred_index, minlength=k * k).reshape(k, k)


def _precision_recall(cm):
    """Per-class precision and recall from a confusion matrix (rows true, columns predicted).

    A class never predicted has undefined precision (NaN here; counted as 0 in
    the macro average, as scikit-learn does); likewise recall of an absent class.
    """
    tp = np.diag(cm).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / cm.sum(axis=0)
        recall = tp / cm.sum(axis=1)
    return precision, recall


def _format_confusion(cm, classes, indent="  "):
    names = [str(c) for c in classes]
    width = max([len(n) for n in names] + [len(str(cm.max())), 4])
    head = indent + " " * width + "  " + "  ".join(n.rjust(width) for n in names)
    rows = [indent + n.rjust(width) + "  " + "  ".join(str(v).rjust(width) for v in row)
            for n, row in zip(names, cm)]
    return "\n".join([head] + rows)


def _print_confusion(cm, classes, label):
    if len(classes) > 20:
        print(f"confusion matrix ({label}): not shown for {len(classes)} classes")
        return
    print(f"confusion matrix ({label}; rows = true class, columns = predicted):")
    print(_format_confusion(cm, classes))


# ---------------------------------------------------------------- progress
class Progress:
    """Epoch progress with the current cost: a bar redrawn in place on a terminal,
    a plain line every tenth of the run otherwise (logs, pipes, CI)."""

    def __init__(self, total, stream=None, enabled=True, width=24):
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.width = width
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self._last_draw = 0.0
        self._every = max(1, total // 10)

    def update(self, epoch, train_cost, val_cost=None):
        if not self.enabled:
            return
        text = f"epoch {epoch:>{len(str(self.total))}}/{self.total}  cost {train_cost:.4f}"
        if val_cost is not None:
            text += f"  held-out {val_cost:.4f}"
        if self.tty:
            now = time.monotonic()
            if epoch != self.total and now - self._last_draw < 0.05:
                return
            self._last_draw = now
            filled = round(self.width * epoch / self.total)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {text}")
            if epoch == self.total:
                self.stream.write("\n")
        elif epoch % self._every == 0 or epoch == self.total:
            self.stream.write(text + "\n")
        self.stream.flush()


# ---------------------------------------------------------------- commands
def stratified_split(labels, fraction, rng):
    """The train / test split of ``dnnblocks train``.

    About `fraction` of the rows of each class go to the test part, always
    leaving at least one row of each class for training.

    Parameters
    ----------
    labels : ndarray of shape (n,)
    fraction : float in [0, 1)
    rng : numpy.random.Generator
        ``np.random.default_rng(seed)`` reproduces ``dnnblocks train --seed seed``.

    Returns
    -------
    train_index, test_index : ndarray of int
        Row numbers; the training rows in shuffled order, the test rows sorted.
    """
    n = len(labels)
    test = np.zeros(n, dtype=bool)
    if fraction > 0:
        for cls in np.unique(labels):
            idx = np.flatnonzero(labels == cls)
            k = min(int(round(fraction * len(idx))), len(idx) - 1)
            test[rng.permutation(idx)[:k]] = True
    train_idx = rng.permutation(np.flatnonzero(~test))
    return train_idx, np.flatnonzero(test)


def _fit_standardisation(X, features):
    """Mean and standard deviation of each column (1 for a constant column, which then stays 0)."""
    with np.errstate(all="ignore"):
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
    bad = ~(np.isfinite(mean) & np.isfinite(scale))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise CLIError(f"column {features[j]!r} holds values too large to standardise (up to "
                       f"{np.abs(X[:, j]).max():.3g}); rescale it first")
    scale[scale == 0] = 1.0
    return mean, scale


def _standardise(X, mean, scale, dtype, features, lines=None, where=""):
    """(X - mean) / scale in `dtype`, C-ordered; one clear error where a value overflows."""
    with np.errstate(all="ignore"):
        Xs = np.ascontiguousarray((X - mean) / scale, dtype=dtype)
    bad = ~np.isfinite(Xs)
    if bad.any():
        i, j = (int(k[0]) for k in np.nonzero(bad))
        line = f"line {lines[i]}: " if lines is not None else f"row {i + 1}: "
        raise CLIError(f"{where}{line}column {features[j]!r} holds {X[i, j]:.6g}, too far outside "
                       f"the training data's range to standardise in {np.dtype(dtype).name}")
    return Xs


def _class_index(classes, labels):
    """Position of each label in `classes`; -1 for a label not among them."""
    index = {str(c): i for i, c in enumerate(classes)}
    return np.fromiter(map(index.get, map(str, labels), itertools.repeat(-1)), dtype=np.intp,
                       count=len(labels))


def _describe_classes(classes):
    text = [str(c) for c in classes[:10]]
    if any("," in t or t != t.strip() for t in text):
        text = [repr(t) for t in text]  # labels with commas would run together
    shown = ", ".join(text)
    return shown + (", ..." if len(classes) > 10 else "")


def cmd_train(args):
    _check_distinct([("DATA.csv", args.data)], [("--out", args.out), ("--plot", args.plot)])
    if args.plot:
        from .plotting import MatplotlibMissingError, require_matplotlib

        try:
            require_matplotlib()
        except MatplotlibMissingError as exc:
            raise CLIError(f"--plot: {exc}") from None
        _output_file(args.plot, "plot")
    _output_file(args.out, "model file", follow_links=False)
    try:
        check_save_target(args.out)  # what saving will refuse (a read-only model), before training
    except (OSError, ValueError) as exc:
        raise CLIError(_one_line(exc)) from None

    recipe = None
    if args.data is None:
        for option in ("target", "features"):
            if getattr(args, option):
                raise CLIError(f"--{option} needs a DATA.csv; the bundled weather task has its own")
        if args.drop:
            raise CLIError("--drop needs a DATA.csv; the bundled weather task has its own features")
        X, labels, features, target = _load_default_task()
        lines = None
        recipe = _WEATHER_RECIPE
        source = f"bundled Seattle weather 2012-2015 ({len(labels)} days), did it rain?"
    else:
        table = read_csv(args.data)
        if not args.target:
            raise CLIError(f"--target is required with a DATA file: the column to predict, one of "
                           f"{_quoted(table.names)}")
        target = args.target
        labels = table.labels(target)
        table.require(args.drop, "--drop")
        if args.features:
            if target in args.features:
                raise CLIError(f"--features includes the target column {target!r}")
            features = args.features
        else:
            features = [n for n in table.names if n != target and n not in args.drop]
            if not features:
                raise CLIError(f"{table.path} has no feature columns besides the target {target!r}")
        X = table.numeric(features, hint=" (leave the column out with --drop)")
        lines = table.lines
        source = f"{table.path} ({table.n_rows} rows), target {target!r}"

    classes = np.unique(labels)
    if len(classes) < 2:
        raise CLIError(f"the target column {target!r} has a single class ({str(classes[0])!r}); "
                       f"a classifier needs at least two")
    if len(classes) > max(20, len(labels) // 2):
        raise CLIError(f"the target column {target!r} has {len(classes)} distinct values in "
                       f"{len(labels)} rows; dnnblocks classifies, it does not do regression")

    rng = np.random.default_rng(args.seed)
    train_idx, test_idx = stratified_split(labels, args.test_fraction, rng)
    if args.test_fraction > 0 and len(test_idx) == 0:
        raise CLIError(f"--test-fraction {args.test_fraction:g} of {len(labels)} rows leaves no "
                       f"test rows; use a larger fraction or 0")
    mean, scale = _fit_standardisation(X[train_idx], features)
    Xs = _standardise(X, mean, scale, args.dtype, features, lines)
    X_train, y_train = Xs[train_idx], labels[train_idx]
    X_test, y_test = Xs[test_idx], labels[test_idx]

    sizes = " -> ".join(str(s) for s in (len(features), *args.layers, 1 if len(classes) == 2 else len(classes)))
    batch = "full" if args.batch_size is None else args.batch_size
    print(f"data:     {source}")
    print(f"classes:  {len(classes)} ({_describe_classes(classes)})")
    print(f"features: {', '.join(features)} (standardised)")
    print(f"split:    {len(train_idx)} train / {len(test_idx)} test rows (stratified, seed {args.seed})")
    print(f"network:  {sizes}, {args.activation}, {args.optimizer}, learning rate {args.learning_rate:g}, "
          f"{args.epochs} epochs, batch {batch}, {args.dtype}, {args.backend} backend")
    sys.stdout.flush()

    clf = DNNClassifierBase(
        hidden_layer_sizes=args.layers, activation=args.activation, solver=args.optimizer,
        alpha=args.l2, batch_size=args.batch_size, learning_rate_init=args.learning_rate,
        max_iter=args.epochs, random_state=args.seed, dropout=args.dropout,
        dtype=np.dtype(args.dtype).type, backend=args.backend, verbose=False,
    )
    progress = Progress(args.epochs, enabled=not args.quiet)
    train_curve, test_curve = [], []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        clf.partial_fit(X_train, y_train, classes=classes)
        if epoch == 1:
            # Columns of predict_proba follow the model's classes_.
            classes = np.asarray(clf.classes_)
            train_index = _class_index(classes, y_train)
            test_index = _class_index(classes, y_test)
        train_curve.append(_log_loss(clf.predict_proba(X_train), train_index))
        if len(test_idx):
            test_curve.append(_log_loss(clf.predict_proba(X_test), test_index))
        progress.update(epoch, train_curve[-1], test_curve[-1] if test_curve else None)
    seconds = time.perf_counter() - start

    train_pred = _class_index(classes, clf.predict(X_train))
    print(f"trained in {seconds:.2f} s")
    print(f"train accuracy: {np.mean(train_pred == train_index):.4f}   cost {train_curve[-1]:.4f}")
    if len(test_idx):
        test_pred = _class_index(classes, clf.predict(X_test))
        print(f"test accuracy:  {np.mean(test_pred == test_index):.4f}   cost {test_curve[-1]:.4f}")
        _print_confusion(_confusion(test_index, test_pred, len(classes)), classes, "test rows")
    else:
        print("test accuracy:  not measured (--test-fraction 0)")
        _print_confusion(_confusion(train_index, train_pred, len(classes)), classes, "train rows")

    extra = {
        "cli_format": CLI_FORMAT,
        "feature_names": list(features),
        "target": target,
        "feature_mean": mean,
        "feature_scale": scale,
    }
    if recipe:
        extra["recipe"] = recipe
    clf.save(args.out, extra=extra)
    print(f"saved model to {args.out}")
    if args.plot:
        from .plotting import plot_learning_curve

        plot_learning_curve(
            args.plot, train_curve, test_curve or None, validation_label="held-out test rows",
            title=f"dnnblocks: {target!r}, {sizes}, {args.optimizer}",
        )
        print(f"saved learning curve to {args.plot}")
    return 0


def _load_for_data(model_path, data_path):
    """Load a model saved by ``dnnblocks train`` and the matching features of a CSV."""
    path = _input_file(model_path, "model file")
    try:
        model, extra = load_as(path, DNNClassifierBase, with_extra=True)
    except ValueError as exc:
        raise CLIError(_one_line(exc) if str(path) in str(exc) else f"{path}: {_one_line(exc)}") from None
    needed = ("feature_names", "feature_mean", "feature_scale", "target")
    if not isinstance(extra, dict) or any(k not in extra for k in needed):
        raise CLIError(f"{path} is a dnnblocks model but was not saved by 'dnnblocks train' "
                       f"(it lacks the feature names and standardisation); use it from Python "
                       f"with dnnblocks.load")
    if extra.get("cli_format", 0) > CLI_FORMAT:
        raise CLIError(f"{path} was written by a newer dnnblocks; upgrade dnnblocks to read it")
    table = read_csv(data_path)
    if extra.get("recipe") == _WEATHER_RECIPE:
        _weather_columns(table)
    features = [str(f) for f in extra["feature_names"]]
    missing = [f for f in features if f not in table.columns]
    if missing:
        raise CLIError(f"{table.path} lacks the model's feature column(s) {_quoted(missing)}; "
                       f"the model was trained on {_quoted(features)}")
    X = table.numeric(features)
    dtype = getattr(model, "dtype", None) or np.float64
    X = _standardise(X, np.asarray(extra["feature_mean"], dtype=np.float64),
                     np.asarray(extra["feature_scale"], dtype=np.float64), dtype, features,
                     table.lines, where=f"{table.path}, ")
    return model, extra, table, X


def cmd_predict(args):
    _check_distinct([("MODEL.npz", args.model), ("DATA.csv", args.data)], [("--out", args.out)])
    if args.out:
        _output_file(args.out, "predictions file")
    model, extra, table, X = _load_for_data(args.model, args.data)
    classes = model.classes_
    predicted = model.predict(X)
    header = [str(extra["target"])]
    columns = [[str(v) for v in predicted]]
    if args.proba:
        proba = model.predict_proba(X)
        header += [f"proba_{c}" for c in classes]
        columns += [[str(v) for v in proba[:, j]] for j in range(len(classes))]
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            _write_rows(f, header, columns)
        print(f"wrote {len(predicted)} predictions of {header[0]!r} to {args.out}")
    else:
        _write_rows(sys.stdout, header, columns)
    return 0


def _write_rows(f, header, columns):
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*columns))


def cmd_evaluate(args):
    model, extra, table, X = _load_for_data(args.model, args.data)
    target = args.target or str(extra["target"])
    labels = table.labels(target)
    classes_text = np.asarray(model.classes_).astype(str)
    true_index = _class_index(classes_text, labels)
    if (true_index < 0).any():
        new = np.unique(labels[true_index < 0])
        raise CLIError(f"the target column {target!r} has label(s) the model never saw: "
                       f"{_quoted(new[:5])}{', ...' if len(new) > 5 else ''}; the model knows "
                       f"{_quoted(classes_text)}")
    proba = model.predict_proba(X)
    # predict() is the reference for the predicted label (argmax of proba, up to exact ties).
    pred_index = _class_index(classes_text, model.predict(X))
    k = len(classes_text)
    cm = _confusion(true_index, pred_index, k)
    precision, recall = _precision_recall(cm)
    print(f"model:    {args.model} (target {target!r}, {k} classes)")
    print(f"data:     {table.path} ({table.n_rows} rows)")
    print(f"accuracy: {np.mean(true_index == pred_index):.4f}")
    print(f"log-loss: {_log_loss(proba, true_index):.4f}")
    print()
    width = max([len(c) for c in classes_text] + [len("macro average")])
    print(f"{'class'.ljust(width)}  precision  recall  support")
    support = cm.sum(axis=1)
    for c, p, r, s in zip(classes_text, precision, recall, support):
        print(f"{c.ljust(width)}  {_fmt(p):>9}  {_fmt(r):>6}  {s:>7}")
    print(f"{'macro average'.ljust(width)}  {np.mean(np.nan_to_num(precision)):>9.4f}  "
          f"{np.mean(np.nan_to_num(recall)):>6.4f}  {support.sum():>7}")
    print()
    _print_confusion(cm, classes_text, f"{table.n_rows} rows")
    return 0


def _fmt(value):
    return "n/a" if np.isnan(value) else f"{value:.4f}"


def cmd_export(args):
    _check_distinct([("MODEL.npz", args.model)], [("MODEL.onnx", args.out)])
    _output_file(args.out, "ONNX file")
    try:
        require_onnx()  # what is missing is said before the model is read
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    export_model_file(args.model, args.out, dtype=args.dtype, classifier_class=DNNClassifierBase)
    print(f"wrote {args.out}")
    return 0


def cmd_bench(args):
    # The benchmark reports the rows of each shape as it finishes them: print
    # the header first and stream the rows, so a long run shows progress and
    # the output is the table once.
    print(benchmark.format_table([], header=True), flush=True)

    def log(rows):
        print(rows, flush=True)

    if args.smoke:
        results = benchmark.run(smoke=True, log=log)
    else:
        results = benchmark.run(quick=not args.full, log=log)
    machine = results.get("machine", {})
    print()
    print("Each row: one training step (forward, cost, backward, update). ms/step: the median over "
          "repeats; x numpy: speed relative to the NumPy backend; / GEMM: time relative to the "
          "matrix products alone.")
    print(f"Measured on {machine.get('processor', '?')}, {machine.get('cores', '?')} cores, "
          f"numpy {machine.get('numpy', '?')}." + (" Smoke run: the timings mean nothing." if args.smoke else ""))
    return 0


# ---------------------------------------------------------------- entry point
def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv=None):
    """Run the ``dnnblocks`` command with `argv` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # nothing to do is a usage mistake too
        parser.print_help()
        return _ERROR_STATUS
    debug = bool(os.environ.get("DNNBLOCKS_DEBUG"))
    prefix = f"dnnblocks {args.command}: error:"
    try:
        # Overflow in a diverging run or on extreme inputs is detected and reported
        # as one line (TrainingDivergedError, the finiteness checks here), so NumPy's
        # floating-point RuntimeWarnings would only add noise before it.
        with np.errstate(all="ignore"):
            return args.func(args)
    except BrokenPipeError:
        # The reader of our output went away (| head): not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except CLIError as exc:
        if debug:
            raise
        print(f"{prefix} {exc}", file=sys.stderr)
        return 1
    except FloatingPointError as exc:
        # TrainingDivergedError: the cost went to NaN/inf.
        if debug:
            raise
        message = _one_line(exc)
        if "learning" not in message.lower():
            message += "; try a smaller --learning-rate"
        print(f"{prefix} {message}", file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError, MemoryError) as exc:
        # The library's own checks name the argument and what was expected;
        # file-system errors name the file.
        if debug:
            raise
        print(f"{prefix} {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ndnnblocks {args.command}: interrupted", file=sys.stderr)
        return 130
