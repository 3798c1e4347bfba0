"""Pool-embedding throughput of BackboneEmbedder against a plain timm baseline, same run.

For EfficientNet-Lite0 at 128 and 224 px and ViT-S/14 (``vit_small_patch14_dinov2``,
random weights: timing does not depend on them) at 224 px, on CIFAR-10 images (32 x 32
JPEGs decoded to a uint8 array, as a user's pool would be; random pixels with
``--data none``), images/s of:

* ``baseline``: the plain pipeline a user would write: timm's eval transform per image
  (Pillow), a DataLoader with batch 128, the timm model in eval mode, fp32, NCHW,
  ``torch.no_grad``;
* ``baseline forward``: the same model on ready tensors (the forward pass alone);
* ``default``: ``BackboneEmbedder`` with its defaults, run with the engine they choose
  for a large pool (``engine_``; ``engine="auto"`` embeds inputs under 256 images with
  torch, and the timed chunks here are smaller for ViT);
* every engine and precision: ``torch`` fp32, ``torch`` bf16 (autocast; 16 images only
  on CPUs without native bfloat16, where it is emulated and very slow), ``onnxruntime``
  fp32 (a row of its own only when the default is not it), and ``onnxruntime fp32,
  spinning``: ONNX Runtime with its worker threads busy-waiting between operators (its
  own default; peal_sk turns it off), to show what that choice is worth on this machine;
  for a transformer, ``onnxruntime fp32, batch N`` with the convolutional networks' batch
  size (``batch_size="auto"`` gives transformers smaller batches in ONNX Runtime).

Variants run interleaved (baseline, default, ..., baseline, default, ...), ``--repeats``
times each after a warm-up (model loading, ONNX export), and the table gives medians,
the speed-up over the baseline (ratio of medians, and the median of the per-round ratios,
which is steadier when other processes share the cores), images per CPU-second (the
process's CPU time, all threads), and the fraction of the measured matmul peak (the
forward's FLOPs, counted by torch, per second, over the float32 or bfloat16 peak of a
2048 x 2048 matrix product, measured in the same run).

Usage::

    python benchmarks/bench_embed.py [--n 256] [--repeats 3] [--threads 2]
        [--models lite0-128 lite0-224 vits14-224] [--data PATH|none]

Writes ``benchmarks/results/embed.json``: per model and variant the images/s of every
round, medians and ratios, with the machine (CPU capability flags, BLAS libraries from
threadpoolctl, torch's build configuration and threads, the load average at the start and
the end).
"""

import argparse
import contextlib
import io
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import run_metadata, write_json

RESULTS = Path(__file__).resolve().parent / "results"
#: the shared data folder next to the repository: ../shared/data/
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.npz"

MODELS = {
    "lite0-128": ("efficientnet_lite0", 128, True),
    "lite0-224": ("efficientnet_lite0", 224, True),
    "vits14-224": ("vit_small_patch14_dinov2", 224, False),
}


def load_images(path, n):
    """n uint8 (32, 32, 3) images: CIFAR-10 train JPEGs decoded, or random pixels."""
    if path is None:
        return np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    from PIL import Image

    d = np.load(path, allow_pickle=False)
    jpeg, off = d["train_jpeg"], d["train_offsets"]
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        with Image.open(io.BytesIO(jpeg[off[i] : off[i + 1]].tobytes())) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out


def torch_config():
    """The lines of torch's build configuration about the CPU (BLAS, oneDNN, OpenMP)."""
    keep = ("Math Kernel", "MKL-DNN", "OpenMP", "CPU capability", "LAPACK", "NNPACK")
    lines = [ln.strip(" -") for ln in torch.__config__.show().splitlines()]
    out = [ln for ln in lines if any(k in ln for k in keep) and "Build settings" not in ln]
    return out + [f"BLAS_INFO={torch.backends.mkl.is_available() and 'mkl' or 'other'}"]


@contextlib.contextmanager
def onnx_spinning():
    """ONNX Runtime sessions made inside spin their idle threads (ONNX Runtime's default)."""
    from peal_sk.classifier import _engines

    before = _engines.ALLOW_SPINNING
    _engines.ALLOW_SPINNING = True
    try:
        yield
    finally:
        _engines.ALLOW_SPINNING = before


def spinning(fn):
    def run(X):
        with onnx_spinning():
            return fn(X)

    return run


def matmul_peak(dtype, n=2048, repeat=5):
    """GFLOP/s of a square matrix product (best of ``repeat``)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def forward_flops(model, img_size):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, img_size, img_size))
    return counter.get_total_flops()


def make_baseline(model, config, images):
    """The plain pipeline: per-image timm transform, DataLoader(128), NCHW fp32 no_grad."""
    from PIL import Image
    from timm.data import create_transform

    transform = create_transform(**config, is_training=False)

    class Pool(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return transform(Image.fromarray(images[i]))

    def run():
        out = []
        with torch.no_grad():
            for xb in torch.utils.data.DataLoader(Pool(), batch_size=128):
                out.append(model(xb))
        return torch.cat(out).numpy()

    return run


def make_forward(model, config, n):
    x = torch.randn(min(n, 128), *config["input_size"])
    reps = -(-n // len(x))

    def run():
        with torch.no_grad():
            for _ in range(reps):
                model(x)

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256, help="images per timed call (Lite0)")
    p.add_argument("--vit-n", type=int, default=64, help="images per timed call (ViT-S)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 rows")
    p.add_argument("--out", default=None, help="result file (default results/embed.json)")
    p.add_argument("--data", default=None, help=f"cifar10-jpeg.npz (default {DATA}) or 'none'")
    args = p.parse_args(argv)

    load_start = [round(x, 2) for x in os.getloadavg()]
    warnings.simplefilter("ignore", UserWarning)  # bf16 on a CPU without it, on purpose
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    import timm
    from threadpoolctl import threadpool_info

    from peal_sk.classifier import BackboneEmbedder, create_backbone
    from peal_sk.classifier._engines import onnx_available
    from peal_sk.classifier._torch_utils import native_bf16_cpu

    data = None if args.data == "none" else Path(args.data or DATA)
    if data is not None and not data.is_file():
        p.error(f"{data} not found: pass --data PATH to cifar10-jpeg.npz, or --data none")
    images = load_images(data, max(args.n, args.vit_n) + 32)
    # emulated bfloat16 matrix products are very slow: a smaller one suffices to measure
    peak = {
        "fp32": matmul_peak(torch.float32),
        "bf16": matmul_peak(torch.bfloat16, n=2048 if native_bf16_cpu() else 512, repeat=2),
    }
    print(
        f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s; "
        f"CPU {torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16_cpu()}, "
        f"torch threads {torch.get_num_threads()}"
    )
    results = []
    for key in args.models:
        name, size, pretrained = MODELS[key]
        n = args.n if name.startswith("efficientnet") else args.vit_n
        pool = images[32 : 32 + n]
        common = {"img_size": size, "pretrained": pretrained}
        default = BackboneEmbedder(name, **common).fit()
        model, config = create_backbone(name, pretrained=pretrained, img_size=size)
        model.eval()
        flops = forward_flops(model, size)
        variants = {
            "baseline": (make_baseline(model, config, pool), n, "fp32"),
            "baseline forward": (make_forward(model, config, n), n, "fp32"),
            f"default ({default.engine_}, {default.precision_})": (
                BackboneEmbedder(name, **common, engine=default.engine_).fit().transform,
                n,
                default.precision_,
            ),
        }
        torch32 = BackboneEmbedder(name, **common, engine="torch", precision="fp32").fit()
        variants["torch fp32"] = (torch32.transform, n, "fp32")
        # each engine's batch_size="auto" (a transformer in ONNX Runtime takes smaller ones)
        batch_sizes = {label: default.batch_size_ for label in variants}
        batch_sizes.update({"baseline": 128, "baseline forward": min(n, 128)})
        batch_sizes["torch fp32"] = torch32.batch_size_
        if not args.no_bf16:
            bf16 = BackboneEmbedder(name, **common, engine="torch", precision="bf16").fit()
            # emulated bfloat16 (no native support) is very slow: a few images suffice
            variants["torch bf16"] = (bf16.transform, n if native_bf16_cpu() else 16, "bf16")
            batch_sizes["torch bf16"] = bf16.batch_size_
        if onnx_available():
            ort = BackboneEmbedder(name, **common, engine="onnxruntime").fit()
            if (default.engine_, default.precision_) != ("onnxruntime", "fp32"):
                variants["onnxruntime fp32"] = (ort.transform, n, "fp32")
            variants["onnxruntime fp32, spinning"] = (spinning(ort.transform), n, "fp32")
            batch_sizes["onnxruntime fp32"] = ort.batch_size_
            batch_sizes["onnxruntime fp32, spinning"] = ort.batch_size_
            if ort.batch_size_ != torch32.batch_size_:  # a transformer: small batches
                big = BackboneEmbedder(
                    name, **common, engine="onnxruntime", batch_size=torch32.batch_size_
                ).fit()
                label = f"onnxruntime fp32, batch {big.batch_size_}"
                variants[label] = (big.transform, n, "fp32")
                batch_sizes[label] = big.batch_size_
        rates = {v: [] for v in variants}
        cpu_rates = {v: [] for v in variants}
        for label, (fn, m, _) in variants.items():  # warm-up: loading, export, oneDNN
            t0 = time.perf_counter()
            if label.startswith("baseline"):
                fn()
            else:
                fn(images[: min(m, 16)])
            print(f"  {key} {label}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
        for r in range(args.repeats):
            for label, (fn, m, _) in variants.items():
                t0, c0 = time.perf_counter(), time.process_time()
                if label.startswith("baseline"):
                    fn()
                else:
                    fn(pool[:m])
                rates[label].append(m / (time.perf_counter() - t0))
                cpu_rates[label].append(m / max(time.process_time() - c0, 1e-9))
            last = ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items())
            print(f"  {key} repeat {r + 1}: {last}", flush=True)
        base = statistics.median(rates["baseline"])
        base_cpu = statistics.median(cpu_rates["baseline"])
        for label, (_, m, precision) in variants.items():
            med = statistics.median(rates[label])
            paired = [a / b for a, b in zip(rates[label], rates["baseline"], strict=True)]
            med_cpu = statistics.median(cpu_rates[label])
            results.append(
                {
                    "model": key,
                    "backbone": name,
                    "img_size": size,
                    "variant": label,
                    "precision": precision,
                    "images": m,
                    "batch_size": batch_sizes[label],
                    "img_per_s": [round(x, 2) for x in rates[label]],
                    "median_img_per_s": round(med, 2),
                    "speedup_vs_baseline": round(med / base, 2),
                    "paired_speedups": [round(x, 2) for x in paired],
                    "median_paired_speedup": round(statistics.median(paired), 2),
                    "img_per_cpu_s": [round(x, 2) for x in cpu_rates[label]],
                    "cpu_speedup_vs_baseline": round(med_cpu / base_cpu, 2),
                    "gflop_per_image": round(flops / 1e9, 3),
                    "peak_fraction": round(med * flops / 1e9 / peak[precision], 3),
                }
            )
        del default
    print()
    print(
        f"| model | variant | img/s (median of {args.repeats}) | x baseline | x baseline "
        "(paired) | x baseline (CPU time) | peak fraction |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['model']} | {row['variant']} | {row['median_img_per_s']:.1f} | "
            f"{row['speedup_vs_baseline']:.2f} | {row['median_paired_speedup']:.2f} | "
            f"{row['cpu_speedup_vs_baseline']:.2f} | {100 * row['peak_fraction']:.1f}% |"
        )
    meta = run_metadata("bench_embed.py")
    meta.update(
        {
            "load_average_start": load_start,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "torch_config": torch_config(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native_bf16_cpu(),
            "matmul_peak_gflops": {k: round(v, 1) for k, v in peak.items()},
            "threadpools": [
                {k: d.get(k) for k in ("internal_api", "num_threads", "version")}
                for d in threadpool_info()
            ],
        }
    )
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        meta["onnxruntime"] = None
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.out) if args.out else RESULTS / "embed.json"
    write_json(path, {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
