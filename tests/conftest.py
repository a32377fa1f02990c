"""Shared fixtures. Tests import the installed dnnblocks, never src/."""

import os
from pathlib import Path

import numpy as np
import pytest

# <clone>/../shared/data in CI (a copy of shared/ sits beside the clone);
# DNNBLOCKS_DATA points elsewhere when the layout differs.
_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_dir():
    """The folder holding catvnoncat.npz, or None."""
    for candidate in (_SHARED_DATA, os.environ.get("DNNBLOCKS_DATA")):
        if candidate and (Path(candidate) / "catvnoncat.npz").is_file():
            return Path(candidate)
    return None


# Session scope: these are plain values, and hypothesis refuses
# function-scoped fixtures in @given tests.
@pytest.fixture(scope="session", params=("compiled", "numpy"))
def backend(request):
    """Backend name, both of them."""
    return request.param


@pytest.fixture(scope="session", params=(np.float32, np.float64), ids=("float32", "float64"))
def dtype(request):
    """Float dtype, both of them."""
    return request.param


@pytest.fixture(scope="session")
def cat_data():
    """The course's cat-vs-non-cat set, flattened and scaled as the course does.

    Returns a dict with ``train_x`` (12288, 209), ``train_y`` (1, 209), ``test_x``
    (12288, 50) and ``test_y`` (1, 50): X float64 in [0, 1], made as the course makes it
    (``reshape(m, -1).T / 255``, so F-ordered), Y int64. Shared by the whole
    session, hence read-only.
    """
    folder = data_dir()
    if folder is None:
        pytest.skip("catvnoncat.npz not found in ../shared/data nor in $DNNBLOCKS_DATA")
    with np.load(folder / "catvnoncat.npz", allow_pickle=False) as f:
        raw = {k: f[k] for k in ("train_x", "train_y", "test_x", "test_y")}
    out = {}
    for part in ("train", "test"):
        x = raw[part + "_x"]
        out[part + "_x"] = x.reshape(x.shape[0], -1).T / 255.0
        out[part + "_y"] = raw[part + "_y"].reshape(1, -1)
    for a in out.values():
        a.flags.writeable = False
    return out
