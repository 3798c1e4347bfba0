"""Root pytest configuration: doctests of the torch half only where torch is installed
(and of the Dask half only where dask is)."""

import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:  # core install: the selectors only
    collect_ignore_glob.append("peal_sk/classifier/*")
    collect_ignore_glob.append("peal_sk/distributed/*")
elif importlib.util.find_spec("dask") is None or importlib.util.find_spec("distributed") is None:
    collect_ignore_glob.append("peal_sk/distributed/_dask.py")  # its examples need [dask]

# the tests' caches (ONNX exports, the engine choices of the autotuning, embeddings) go to a
# folder of this run, never to the user's ~/.cache
import os  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("PEAL_SK_CACHE_DIR", tempfile.mkdtemp(prefix="peal_sk-tests-"))
