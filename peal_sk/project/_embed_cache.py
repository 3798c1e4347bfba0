"""Frozen backbone embeddings of the project's images, cached on disk.

The cache is one ``cache/embeddings-<digest>.npz`` per backbone configuration, keyed by
``relpath|size|mtime_ns``, so a changed folder only embeds what is new or changed. A
read-only project computes missing embeddings in memory and writes nothing.
"""

# SPDX-License-Identifier: BSD-3-Clause

import hashlib
import importlib.util
import io
import json
import time
from pathlib import Path

import numpy as np

from ._common import require_torch, write_atomic

__all__ = ["cache_file", "embeddings"]


def cache_file(project_path, backbone):
    """``(identity string, cache path)`` of a backbone configuration."""
    ident = json.dumps(backbone, sort_keys=True)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return ident, Path(project_path) / "cache" / f"embeddings-{digest}.npz"


def _load(path):
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as f:
            return dict(zip(f["keys"].tolist(), f["emb"], strict=True))
    except (OSError, ValueError, KeyError, EOFError):
        return {}  # unreadable cache (e.g. truncated by hand): recompute


def embeddings(
    rows,
    *,
    project_path,
    root,
    backbone,
    persist=True,
    on_new_cache=None,
    progress=False,
    log=None,
):
    """Embeddings ``(len(rows), d)`` float32 of ``rows`` (with relpath, size, mtime_ns).

    Missing ones are computed with :class:`~peal_sk.classifier.BackboneEmbedder`; with
    ``persist`` the cache file is rewritten atomically and ``on_new_cache(ident, path)``
    is called (to record it in the database). ``progress``: a progress bar over batches
    (tqdm); ``log(line)`` is told when embedding starts and ends.
    """
    ident, path = cache_file(project_path, backbone)
    keys = [f"{r['relpath']}|{r['size']}|{r['mtime_ns']}" for r in rows]
    store = _load(path)
    todo = [i for i, k in enumerate(keys) if k not in store]
    if todo:
        require_torch("embedding the images")
        from ..classifier import BackboneEmbedder

        progress = bool(progress) and importlib.util.find_spec("tqdm") is not None
        t0 = time.perf_counter()
        if log is not None:
            log(
                f"embedding {len(todo)} image(s) with {backbone['backbone']} at "
                f"{backbone['img_size']} px ({len(keys) - len(todo)} cached)"
            )
        emb = BackboneEmbedder(
            backbone["backbone"],
            pretrained=backbone["pretrained"],
            img_size=backbone["img_size"],
            backbone_kwargs=backbone["backbone_kwargs"] or None,
            progress=progress,
        ).fit()
        new = emb.transform([str(Path(root) / rows[i]["relpath"]) for i in todo])
        if log is not None:
            log(f"embedded {len(todo)} image(s) in {time.perf_counter() - t0:.1f} s")
        store.update({keys[i]: vec for i, vec in zip(todo, new, strict=True)})
        if persist:
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            all_keys = sorted(store)
            np.savez(
                buf,
                keys=np.asarray(all_keys, dtype=str),
                emb=np.stack([store[k] for k in all_keys]).astype(np.float32),
            )
            write_atomic(path, buf.getvalue(), overwrite=True)
            if on_new_cache is not None:
                on_new_cache(ident, path)
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([store[k] for k in keys]).astype(np.float32)
