"""``peal-sk embed SOURCE --out DIR``: sharded, resumable embeddings of an image folder."""

# SPDX-License-Identifier: BSD-3-Clause

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

__all__ = ["add_embed_parser", "run_embed"]

DESCRIPTION = """\
Embed every image of SOURCE (a folder, searched recursively, or a text file listing
image paths, one per line) with a frozen backbone and write OUT/shard-NNNNN.npy (float32
embeddings), OUT/shard-NNNNN.paths.txt (the path of each row) and OUT/manifest.json
(configuration, shards with sha256, n, dims, skipped images). Files are written
atomically; a rerun keeps the finished shards and computes the rest. Unreadable images
are skipped with a warning and listed in the manifest. Load the result with
peal_sk.distributed.load_shards(OUT)."""


#: the library's parameter names and the command's flags (errors name parameters, as
#: ``force=True``; the command shows the flag instead)
_FLAGS = {
    "force=True": "--force",
    "scheduler=": "--scheduler ",
    "resources=": "--resources ",
    "shard_size=": "--shard-size ",
    "checkpoint_path=": "--checkpoint ",
    "backbone_kwargs=": "--backbone-kwargs ",
    "device=": "--device ",
    "precision=": "--precision ",
    "batch_size=": "--batch-size ",
    "img_size=": "--img-size ",
}
_FLAG_PATTERN = re.compile(r"\b(" + "|".join(re.escape(k) for k in _FLAGS) + ")")


def as_flags(message):
    """``message`` with the library's parameter names replaced by the command's flags."""
    return _FLAG_PATTERN.sub(lambda m: _FLAGS[m.group(1)], message)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _json_dict(text):
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object; got {text}")
    return value


def _resources(text):
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=N[,NAME=N]; got {text!r}")
    return out


def add_embed_parser(sub):
    """Add the ``embed`` subcommand to the ``peal-sk`` parser's subparsers ``sub``."""
    embed = sub.add_parser(
        "embed",
        help="embed an image folder into resumable shards (in-process or on a Dask cluster)",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    embed.add_argument("source", metavar="SOURCE", help="image folder or text file of paths")
    embed.add_argument(
        "--out", type=Path, required=True, default=argparse.SUPPRESS, help="output folder"
    )
    embed.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="backbone name (see peal_sk.classifier.list_backbones()); pretrained weights "
        "must be available offline, or give --checkpoint",
    )
    embed.add_argument("--img-size", type=_positive_int, default=224, help="input resolution")
    embed.add_argument(
        "--checkpoint", default=None, help="a local weight file for the backbone (.pth, ...)"
    )
    embed.add_argument(
        "--backbone-kwargs",
        type=_json_dict,
        default=None,
        metavar="JSON",
        help="extra timm.create_model arguments, e.g. '{\"drop_path_rate\": 0.0}'",
    )
    embed.add_argument(
        "--precision",
        default=None,
        help="BackboneEmbedder precision (default: BackboneEmbedder's)",
    )
    embed.add_argument(
        "--batch-size", type=_positive_int, default=None, help="images per forward pass"
    )
    embed.add_argument("--device", default="auto", help="torch device of each process")
    embed.add_argument(
        "--shard-size", type=_positive_int, default=4096, help="images per shard file"
    )
    embed.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="a running Dask scheduler (tcp://host:8786): one task per shard on its "
        "workers, which must see the images under the same paths (default: this process, "
        "no dask needed)",
    )
    embed.add_argument(
        "--resources",
        type=_resources,
        default=None,
        metavar="NAME=N[,NAME=N]",
        help="with --scheduler: worker resources each shard needs, e.g. GPU=1 for workers "
        'started with dask worker ADDRESS --resources "GPU=1"',
    )
    embed.add_argument("--progress", action="store_true", help="show a progress bar")
    embed.add_argument(
        "--force", action="store_true", help="replace shards of another configuration in --out"
    )
    return embed


def run_embed(args):
    """Run ``peal-sk embed`` from parsed arguments; returns the exit status."""
    from ._shards import embed_to_shards

    try:
        from ..classifier import BackboneEmbedder
    except ImportError as exc:
        print(f"peal-sk embed: error: {exc}", file=sys.stderr)
        return 2
    params = {
        "img_size": args.img_size,
        "device": args.device,
        "backbone_kwargs": args.backbone_kwargs,
    }
    if args.checkpoint is not None:
        params["checkpoint_path"] = args.checkpoint
    if args.precision is not None:
        params["precision"] = args.precision
    if args.batch_size is not None:
        params["batch_size"] = args.batch_size
    embedder = BackboneEmbedder(args.backbone, **params)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"peal-sk embed: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        try:
            manifest = embed_to_shards(
                args.source,
                args.out,
                embedder,
                shard_size=args.shard_size,
                scheduler=args.scheduler,
                resources=args.resources,
                force=args.force,
                progress=args.progress,
            )
        except (FileNotFoundError, FileExistsError, ValueError) as exc:
            exc.args = (as_flags(str(exc)),)
            raise  # reported by peal-sk's parser, as for the other commands
        except (ImportError, OSError) as exc:  # no dask; a scheduler that does not answer
            print(f"peal-sk embed: error: {as_flags(str(exc))}", file=sys.stderr)
            return 2
    computed = manifest["n_shards"] - manifest["reused"]
    print(
        f"wrote {args.out}/: {manifest['n']} embeddings x {manifest['dims']} in "
        f"{manifest['n_shards']} shards ({computed} computed, {manifest['reused']} kept from "
        f"an earlier run; {len(manifest['skipped'])} skipped) "
        f"in {manifest['wall_time_s']} s"
    )
    return 0
