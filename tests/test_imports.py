"""The selector half never imports torch; the estimator half loads lazily."""

import importlib.util
import subprocess
import sys

import pytest

HAS_TORCH = importlib.util.find_spec("torch") is not None


def run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_import_peal_sk_and_every_selector_without_torch():
    code = (
        "import sys, numpy as np\n"
        "import peal_sk\n"
        "from peal_sk import selection\n"
        "X = np.random.default_rng(0).normal(size=(60, 4))\n"
        "for name in ('RandomSelector', 'KCenterSelector', 'KMeansSelector',\n"
        "             'ActiveFTSelector', 'BiLAFSelector'):\n"
        "    getattr(selection, name)(random_state=0).select(X, 5)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = run(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not HAS_TORCH, reason="needs the [torch] extra")
def test_estimator_loads_lazily():
    proc = run("import sys, peal_sk; peal_sk.PEALClassifier; assert 'torch' in sys.modules")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(HAS_TORCH, reason="checks the error without the [torch] extra")
def test_estimator_without_torch_says_what_to_install():
    import peal_sk

    with pytest.raises(ImportError, match=r"peal-sk\[torch\]"):
        peal_sk.PEALClassifier  # noqa: B018
