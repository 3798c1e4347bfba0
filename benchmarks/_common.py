"""Shared by the benchmark scripts: the synthetic pool, the run metadata, result files."""

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from peal_sk.utils._io import write_atomic


def make_data(n, d=384, n_centres=100, seed=0):
    """Issue 3's synthetic features: float32, centres N(0, 2^2), points centre + N(0, 1)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_centres, d)).astype(np.float32)
    X = centres[rng.integers(n_centres, size=n)]
    X += rng.standard_normal(size=(n, d), dtype=np.float32)
    return X


def log(*args):
    """Print at once (a long run's progress reaches a redirected log as it happens)."""
    print(*args, flush=True)


def limit_threads(n):
    """``n`` threads for BLAS and OpenMP (numpy, scikit-learn, faiss): on a shared machine
    two threads stall whenever another process holds a core."""
    import sklearn.cluster  # noqa: F401  (loads its OpenMP runtime before the limit)
    from threadpoolctl import threadpool_limits

    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass
    threadpool_limits(limits=n)


def write_json(path, result):
    """Write ``result`` to ``path`` as indented JSON, atomically: a killed run leaves the
    previous result file whole (:func:`peal_sk.utils._io.write_atomic`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")


def run_metadata(script):
    """The command that produced a result file and where it ran."""
    return {
        "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d"),
        **compute_metadata(),
    }


#: the /proc/cpuinfo flags that decide the fast paths (SIMD width, native bfloat16, AMX)
CPU_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "avx_vnni",
)


def cpu_flags():
    """The CPU_FLAGS this CPU has (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in CPU_FLAGS if f in have]
    return []


def compute_metadata():
    """BLAS libraries and threads (threadpoolctl), the load average, and torch's threads and
    CPU capability once the script has loaded torch.

    torch is not imported here: the fields appear when the script has imported it.
    """
    info = {"cpu_flags": cpu_flags()}  # the CPU capability, also without torch
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            f"{d.get('internal_api')} {d.get('version')} ({d.get('prefix')}, "
            f"{d.get('num_threads')} threads)"
            for d in threadpool_info()
        ]
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):  # other processes on the machine skew every timing
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


#: the shared data folder, next to the repository (``../shared/data``), never an absolute path
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cifar10_npz(path=None):
    """The CIFAR-10 archive (``--data``, default ``../shared/data/cifar10-jpeg.npz``).

    Raises ``SystemExit`` with the expected location when it is missing, before any work.
    """
    path = Path(path) if path is not None else SHARED_DATA / "cifar10-jpeg.npz"
    if not path.is_file():
        raise SystemExit(
            f"CIFAR-10 data not found: expected the file {path} (cifar10-jpeg.npz, see "
            "shared/data/README.md next to the repository); pass --data PATH to use another copy."
        )
    return path
