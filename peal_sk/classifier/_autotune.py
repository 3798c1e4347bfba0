"""The engine and precision that run a backbone fastest on this machine, by measurement.

Which engine x precision is fastest depends on the network and on the machine, and no
rule of thumb held on both CPU kinds we run on: bfloat16 is native on CPUs with
AVX512-BF16 / AMX and emulated (about six times slower) on AVX2-only ones; on a CPU with
native bfloat16 it made ViT-S/14 2.7x faster than float32 in torch, while EfficientNet-
Lite0 ran 4.7x faster in ONNX Runtime float32 than in torch bfloat16 on another. So, like
cuDNN's ``benchmark`` mode, the first use of a configuration times each available
candidate on a few batches of synthetic images and keeps the fastest; the choice is
cached on disk per machine (``autotune.json`` in the peal_sk cache folder), so later
processes read it instead of timing again.

The key of a choice holds everything the ranking depends on: the backbone identity, the
input size, the batch size, the device and what the processor computes natively (torch's
CPU capability, the bfloat16 / AMX flags, the processor's name), the thread count and the
torch / ONNX Runtime versions.
"""

# SPDX-License-Identifier: BSD-3-Clause

import json
import os
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..utils._io import write_atomic
from ._torch_utils import _cpu_flag, native_bf16_cpu

__all__ = ["Choice", "autotune_cache_file", "candidates", "choose", "machine_capability"]

#: bumped when the measurement changes, so that older choices are measured again
AUTOTUNE_VERSION = 2
#: rounds of timing after one warm-up batch: each round times one batch of every
#: candidate still in the race, in turn, so that a passing slowdown of the machine hits
#: one batch of one candidate rather than all of its batches; the fastest batch counts
#: (a busy machine only ever slows a batch down)
TIMED_ROUNDS = 3
#: the most images in a first timing batch (a batch of the configured size can take
#: seconds)
MAX_TIMING_BATCH = 32
#: timing batches hold the configured batch size instead when the fastest candidate runs
#: that in at most this many seconds: the rates depend on the batch size
#: (EfficientNet-Lite0's last two stages on a 2-core AVX512-BF16 CPU: torch bf16 2,337 /
#: 2,918 rows/s and ONNX Runtime 1,945 / 1,970 at 32 / 128 rows)
FULL_BATCH_SECONDS = 0.25
#: a candidate whose first timed batch is this many times slower than the best so far is
#: not timed further (emulated bfloat16, say): it cannot win
GIVE_UP_RATIO = 4.0

_lock = threading.Lock()
_memo = {}  # key -> Choice (this process)


@dataclass(frozen=True)
class Choice:
    """The outcome of a choice: the engine, its precision, and what was measured.

    Attributes
    ----------
    engine : {"torch", "onnxruntime"}
    precision : {"fp32", "bf16", "fp16"}
    images_per_s : dict
        ``"engine/precision" -> images per second`` for each candidate timed (None where
        it was not timed to the end); empty when there was a single candidate.
    measured : bool
        Whether the candidates were timed (now or in an earlier process: see
        ``from_cache``).
    from_cache : bool
        Whether the choice was read from the cache file instead of timed now.
    """

    engine: str
    precision: str
    images_per_s: dict = field(default_factory=dict)
    measured: bool = False
    from_cache: bool = False

    def best_for(self, engine):
        """The fastest precision measured for ``engine`` (``precision`` if never timed)."""
        timed = {
            k.split("/")[1]: v
            for k, v in self.images_per_s.items()
            if k.split("/")[0] == engine and v is not None
        }
        if not timed:
            return self.precision if engine == self.engine else "fp32"
        return max(timed, key=timed.get)

    def as_dict(self):
        """A JSON-ready record (benchmarks keep it beside their timings)."""
        return {
            "engine": self.engine,
            "precision": self.precision,
            "images_per_s": dict(self.images_per_s),
            "measured": self.measured,
            "from_cache": self.from_cache,
            "machine": machine_capability(),
        }


def _cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_capability(device="cpu"):
    """What the ranking of engines depends on, for this machine and ``device``.

    Parameters
    ----------
    device : str, default="cpu"

    Returns
    -------
    capability : dict
    """
    info = {
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": _cpu_flag("_is_avx512_bf16_supported"),
        "amx_tile": _cpu_flag("_is_amx_tile_supported"),
        "native_bf16": native_bf16_cpu(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        info["gpu"] = torch.cuda.get_device_name(index)
    return info


def autotune_cache_file():
    """``$PEAL_SK_CACHE_DIR/autotune.json``, or ``~/.cache/peal_sk/autotune.json``."""
    root = os.environ.get("PEAL_SK_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "peal_sk")
    return Path(root) / "autotune.json"


def candidates(device, *, engine="auto", precision="auto", onnx_ok=False):
    """The (engine, precision) pairs worth timing for these settings.

    An explicit ``engine`` or ``precision`` restricts the candidates to it. bfloat16 is a
    candidate on a CPU only where it is native (emulated, it is several times slower than
    float32: timing it would only cost time); float16 only on a CUDA GPU. ONNX Runtime
    runs float32 on the CPU, where ``onnx_ok``.

    Parameters
    ----------
    device : str
        A resolved device.
    engine : {"auto", "torch", "onnxruntime"}, default="auto"
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
    onnx_ok : bool, default=False
        Whether ONNX Runtime can run this backbone here (installed, exportable).

    Returns
    -------
    pairs : list of tuple
    """
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu:
        torch_precisions = ["fp32", "bf16"] if native_bf16_cpu() else ["fp32"]
    else:
        torch_precisions = ["fp32", "bf16", "fp16"]
    pairs = [("torch", p) for p in torch_precisions]
    if on_cpu and onnx_ok:
        pairs.append(("onnxruntime", "fp32"))
    if engine != "auto":
        pairs = [c for c in pairs if c[0] == engine]
    if precision != "auto":
        pairs = [c for c in pairs if c[1] == precision]
    return pairs


def _key(ident, input_shape, batch_size, device, pairs):
    return repr(
        (
            AUTOTUNE_VERSION,
            ident,
            tuple(input_shape),
            int(batch_size),
            str(torch.device(device).type),
            sorted(machine_capability(device).items()),
            pairs,
        )
    )


def _read_cache(path):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _rate(engine, batch, n_timed):
    """Images per second of a warmed-up ``engine`` on ``batch``: the fastest of n_timed."""
    best = float("inf")
    for _ in range(n_timed):
        t0 = time.perf_counter()
        engine(batch)
        best = min(best, time.perf_counter() - t0)
    return len(batch) / best


def choose(ident, make_engine, input_shape, *, device, batch_size, pairs, cache=True):
    """The fastest of ``pairs``, timed now or read from the cache.

    Parameters
    ----------
    ident : object with a stable ``repr``
        The model's identity (backbone name, weights, size...).
    make_engine : callable
        ``make_engine(engine, precision)`` returns a callable taking a float32 batch
        ``(n, *input_shape)`` (a CPU tensor).
    input_shape : tuple of int
        One input's shape, e.g. ``(3, 128, 128)``.
    device : str
    batch_size : int
        The batch size the engine will run at (timing batches hold at most
        ``MAX_TIMING_BATCH`` images).
    pairs : list of tuple
        From :func:`candidates`; one pair is returned as it is, unmeasured.
    cache : bool, default=True
        Read and write the choice in :func:`autotune_cache_file`.

    Returns
    -------
    choice : Choice
    """
    if not pairs:
        raise ValueError("no engine / precision candidate to choose from.")
    if len(pairs) == 1:
        return Choice(*pairs[0])
    key = _key(ident, input_shape, batch_size, device, pairs)
    with _lock:
        if key in _memo:
            return _memo[key]
    path = autotune_cache_file()
    if cache:
        hit = _read_cache(path).get(key)
        if isinstance(hit, dict) and tuple((hit.get("engine"), hit.get("precision"))) in pairs:
            choice = Choice(
                hit["engine"], hit["precision"], hit.get("images_per_s", {}), True, True
            )
            with _lock:
                _memo[key] = choice
            return choice
    n = max(1, min(int(batch_size), MAX_TIMING_BATCH))
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn((n, *input_shape), generator=gen)
    rates, engines = {}, {}
    for engine_name, precision in pairs:
        label = f"{engine_name}/{precision}"
        rates[label] = None
        try:
            engine = make_engine(engine_name, precision)
            engine(batch)  # warm-up (and, for a new export, its check against torch)
        except Exception:  # an export or a run that fails is no candidate
            continue
        engines[label] = engine
    if engines:
        first = {label: _rate(engine, batch, 1) for label, engine in engines.items()}
        if int(batch_size) > n and int(batch_size) / max(first.values()) <= FULL_BATCH_SECONDS:
            # cheap enough to time at the size the engines will run at
            full = torch.randn((int(batch_size), *input_shape), generator=gen)
            try:
                for engine in engines.values():
                    engine(full)  # warm-up at this shape
            except Exception:  # out of memory at the full size, say: time the small one
                full = None
            if full is not None:
                batch = full
                first = {label: _rate(engine, batch, 1) for label, engine in engines.items()}
        rates.update(first)
        best_rate = max(first.values())
        # a candidate this much slower than the best cannot win (emulated bfloat16, say)
        racing = [label for label in engines if first[label] * GIVE_UP_RATIO >= best_rate]
        for _ in range(TIMED_ROUNDS - 1):
            for label in racing:
                rates[label] = max(rates[label], _rate(engines[label], batch, 1))
    timed = {k: v for k, v in rates.items() if v is not None}
    if not timed:
        return Choice(*pairs[0], images_per_s=rates, measured=True)
    best = max(timed, key=timed.get)
    engine_name, precision = best.split("/")
    choice = Choice(engine_name, precision, rates, True, False)
    with _lock:
        _memo[key] = choice
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = _read_cache(path)
            data[key] = {
                "engine": engine_name,
                "precision": precision,
                "images_per_s": rates,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            write_atomic(path, json.dumps(data, indent=1) + "\n")
        except OSError:
            pass  # a read-only cache folder: the choice holds for this process
    return choice
