"""DNNClassifier against scikit-learn's own estimator checks, every one of them.

No check is skipped or expected to fail. The one check scikit-learn skips by
itself unless SciPy's array-API mode is switched on before SciPy is imported
(``check_array_api_input``) is run in a subprocess with ``SCIPY_ARRAY_API=1``.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from dnnblocks import DNNClassifier  # noqa: E402

# Many checks fit with the default max_iter on tiny data; the warning is expected there.
pytestmark = pytest.mark.filterwarnings("ignore::dnnblocks.exceptions.ConvergenceWarning")

# Several configurations, so that every solver, both backends, both dtypes,
# dropout, L2, the schedule, full batch and early stopping go through the checks.
ESTIMATORS = [
    DNNClassifier(),
    DNNClassifier(solver="momentum", learning_rate_init=0.1, hidden_layer_sizes=(16, 8),
                  dropout=0.1, alpha=0.01, backend="numpy"),
    DNNClassifier(solver="sgd", learning_rate_init=0.1, learning_rate="inverse_time",
                  decay_rate=0.01, dtype=np.float32, early_stopping=True, batch_size=None,
                  activation="tanh"),
]

# Expected failures, with the reason for each: none.
EXPECTED_FAILED_CHECKS = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    with np.errstate(all="ignore"):
        check(estimator)


def test_array_api_check_in_array_api_mode():
    code = textwrap.dedent(
        """
        import warnings
        from sklearn.utils.estimator_checks import check_estimator
        from dnnblocks import DNNClassifier
        warnings.simplefilter("ignore")
        results = check_estimator(DNNClassifier(hidden_layer_sizes=(8,)), on_fail=None)
        api = [r for r in results if r["check_name"] == "check_array_api_input"]
        assert api, "check_array_api_input was not run"
        bad = [(r["check_name"], r["status"], repr(r["exception"])) for r in api if r["status"] != "passed"]
        assert not bad, bad
        print("ok", len(api))
        """
    )
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok")
