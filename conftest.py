"""Root pytest configuration: doctests of the torch half only where torch is installed
(and of the Dask half only where dask is); no download of pretrained weights."""

import importlib.util
import os

# The suite never reaches the network: pretrained weights come from local sources only
# (set before huggingface_hub is imported). tests/test_weights_download.py lifts this
# against the hub stand-in it serves on 127.0.0.1.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
