"""
Data-parallel fine-tuning with accelerate
=========================================

:class:`~peal_sk.classifier.PEALClassifier` trains data-parallel on several GPUs (or
CPU processes) through Hugging Face accelerate and skorch's
:class:`~skorch.hf.AccelerateMixin`: pass ``accelerator="auto"`` and start the script
with accelerate's launcher, one process per GPU::

    accelerate launch --multi_gpu --num_processes 2 examples/accelerate_multi_gpu.py

Every process runs this whole script on the same data; each trains on its share of
every epoch's batches, the gradients are averaged, ``predict_proba`` returns all the
predictions on every process and only the main process writes the saved model.

Without GPUs, the same launcher runs CPU processes (gloo backend) when the estimator is
told ``device="cpu"`` (``--cpu`` below); this is how the test suite checks the
two-process path::

    accelerate launch --multi_gpu --num_processes 2 examples/accelerate_multi_gpu.py --cpu

(``accelerate launch --cpu --num_processes 2`` would need MPI's ``mpirun``;
``torchrun --nproc_per_node 2 examples/accelerate_multi_gpu.py --cpu`` works too.) Run
without a launcher, the script trains in one process.

The backbone here is a tiny randomly initialised DINOv2-architecture ViT and the data
are random images, so that the script runs anywhere in seconds; replace them with a
pretrained backbone and your images. This example is not executed by the documentation
build (it wants a launcher); it is shown for reading and downloading.
"""

import argparse
import os
import tempfile

import numpy as np

from peal_sk.classifier import PEALClassifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--cpu", action="store_true", help="CPU processes (gloo), no GPU")
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "peal-accel"))
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(args.n_images, 28, 28, 3), dtype=np.uint8)
    y = np.arange(args.n_images) % 2
    X[y == 1, ::2] //= 2  # darker odd rows: something to learn

    clf = PEALClassifier(
        "vit_small_patch14_dinov2",
        pretrained=False,
        backbone_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2, "global_pool": "avg"},
        img_size=28,
        lora_r=4,
        lora_alpha=4,
        batch_size=8,  # per process: one step sees 8 x processes images
        max_epochs=args.epochs,
        lr=3e-3,
        random_state=0,
        device="cpu" if args.cpu else "auto",
        accelerator="auto",  # built at fit time from the launcher's settings
        verbose=1,  # the epoch log, printed by the main process
    )
    clf.fit(X, y)

    accelerator = clf.accelerator_
    proba = clf.predict_proba(X)  # all images, on every process
    accuracy = float(np.mean(clf.classes_[proba.argmax(1)] == y))
    print(
        f"process {accelerator.process_index}/{accelerator.num_processes} "
        f"({accelerator.device}): {len(proba)} predictions, training accuracy {accuracy:.2f}, "
        f"head checksum {clf.coef_.sum():+.6f}",
        flush=True,
    )
    path = clf.save_adapters(args.out, overwrite=True)  # every process calls it
    accelerator.print(f"adapters and head saved by the main process in {path}")


if __name__ == "__main__":
    main()
