"""Throughput of the PEAL estimator's building blocks on this machine (CPU by default).

ViT-S/14 (timm ``vit_small_patch14_dinov2``, DINOv2's architecture; random weights,
since timing does not depend on them) at 224 and 112 px, fp32 and bf16 autocast:

* forward (inference) images/s and the fraction of the measured matmul peak;
* LoRA training images/s (rank 16 on every block's qkv; forward + backward + Adam step);
* LoRA on the last 2 of 12 blocks with the frozen prefix cached (``lora_last_blocks=2``,
  ``cache_prefix=True``): per-epoch training images/s, and the end-to-end speed-up for a
  50-epoch fit including the one-time prefix pass;
* linear probing: one forward pass per fit (features computed once) plus the head.

Usage::

    python benchmarks/bench_classifier.py [--batch 16] [--steps 2] [--device cpu]

Writes ``benchmarks/results/classifier.json``.
"""

import argparse
import time
from pathlib import Path

import torch
from _common import run_metadata, write_json
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from peal_sk.classifier import create_backbone, inject_lora
from peal_sk.classifier._fast import split_backbone
from peal_sk.classifier._nets import PEALModule

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_peak(dtype, device, n=2048, repeat=5):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e9


def timed(fn, steps, device):
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def model(img_size, precision, device, lora_blocks=None):
    backbone, _ = create_backbone("vit_small_patch14_dinov2", pretrained=False, img_size=img_size)
    targets = []
    if lora_blocks is not None:
        last = None if lora_blocks == 12 else lora_blocks
        targets = inject_lora(backbone, r=16, alpha=16, last_blocks=last)
    split = split_backbone(backbone, lora_blocks) if lora_blocks not in (None, 12) else None
    module = PEALModule(backbone, backbone.num_features, 10, precision, split, frozen_norm=True)
    return module.to(device), targets


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=50, help="for the end-to-end speed-up")
    args = parser.parse_args()
    torch.manual_seed(0)
    dev, B = args.device, args.batch
    out = {
        "threads": torch.get_num_threads(),
        "peak_gflops": {
            "fp32": matmul_peak(torch.float32, dev),
            "bf16": matmul_peak(torch.bfloat16, dev),
        },
        "runs": [],
    }
    print(
        f"matmul peak: fp32 {out['peak_gflops']['fp32']:.0f} GFLOP/s, "
        f"bf16 {out['peak_gflops']['bf16']:.0f} GFLOP/s ({out['threads']} threads, {dev})"
    )
    y = torch.randint(0, 10, (B,), device=dev)
    for img in (224, 112):
        x = torch.randn(B, 3, img, img, device=dev)
        for precision in ("fp32", "bf16"):
            row = {"img_size": img, "precision": precision, "batch": B}
            m, _ = model(img, precision, dev)
            m.eval()
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                m.embed(x)
            flops = fc.get_total_flops() / B
            with torch.no_grad():
                t = timed(lambda m=m, x=x: m.embed(x), args.steps, dev)
            row["forward_img_s"] = B / t
            row["gflop_per_img"] = flops / 1e9
            row["forward_peak_fraction"] = flops * B / t / 1e9 / out["peak_gflops"][precision]

            # LoRA on all 12 blocks: forward + backward + Adam
            m, _ = model(img, precision, dev, lora_blocks=12)
            m.train()
            opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)

            def step(m=m, opt=opt, x=x):
                opt.zero_grad()
                nn.functional.cross_entropy(m(x), y).backward()
                opt.step()

            row["lora_train_img_s"] = B / timed(step, args.steps, dev)

            # LoRA on the last 2 blocks, prefix cached: one prefix pass, then tokens
            m, _ = model(img, precision, dev, lora_blocks=2)
            m.eval()
            with torch.no_grad():
                t_prefix = timed(lambda m=m, x=x: m.prefix(x), 1, dev)
                tokens = m.prefix(x)
            m.train()
            m.token_input = True
            opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)

            def step_cached(m=m, opt=opt, t=tokens):
                opt.zero_grad()
                nn.functional.cross_entropy(m(t), y).backward()
                opt.step()

            t_suffix = timed(step_cached, args.steps, dev)
            t_full = B / row["lora_train_img_s"]
            E = args.epochs
            row["last2_cached_train_img_s"] = B / t_suffix
            row["last2_epoch_speedup"] = t_full / t_suffix
            row["last2_fit_speedup"] = E * t_full / (t_prefix + E * t_suffix)
            # linear probing: features once per fit, the head is negligible
            row["linear_probe_img_s_per_fit"] = row["forward_img_s"]
            out["runs"].append(row)
            print(
                f"{img:>3} px {precision}: forward {row['forward_img_s']:6.1f} img/s "
                f"({row['gflop_per_img']:.1f} GFLOP/img, "
                f"{100 * row['forward_peak_fraction']:.0f}% of matmul peak); "
                f"LoRA train {row['lora_train_img_s']:5.1f} img/s; last-2 cached "
                f"{row['last2_cached_train_img_s']:6.1f} img/s per epoch "
                f"({row['last2_epoch_speedup']:.1f}x per epoch, "
                f"{row['last2_fit_speedup']:.1f}x for a {E}-epoch fit); linear probing "
                f"{row['linear_probe_img_s_per_fit']:.1f} img/s (features once per fit)"
            )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "classifier.json"
    meta = run_metadata("bench_classifier.py")
    meta["torch"] = torch.__version__
    write_json(path, {"meta": meta, "results": out})


if __name__ == "__main__":
    main()
