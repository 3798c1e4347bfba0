"""``peal-sk embed``: embeddings of an image folder as resumable shards plus a manifest.

Layout of the output folder::

    manifest.json            format, source, configuration, shard list (rows, sha256, the
                             inputs' digest, skipped images), n, dims, complete
    shard-00000.npy          float32 (rows, dims) embeddings of the shard's readable images
    shard-00000.paths.txt    their paths, one per line, in row order
    ...

Every file is written to a temporary name and renamed (``os.replace``), so a killed run
leaves no partial shard; the manifest is rewritten after each shard. A rerun verifies the
finished shards (sha256 of both files, and the size and modification time of every input
image) and computes only the others.
"""

# SPDX-License-Identifier: BSD-3-Clause

import hashlib
import json
import os
import time
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np

from ..utils._io import write_atomic

__all__ = ["embed_to_shards", "list_images", "load_shards"]

#: file name endings read as images when a folder is searched (case-insensitive)
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
)
MANIFEST = "manifest.json"
FORMAT = "peal-sk-embeddings/1"
#: embedder parameters that do not change the embeddings (not part of the configuration)
_RUNTIME_PARAMS = ("batch_size", "device", "progress", "cache_dir")


def _shard_name(index):
    return f"shard-{index:05d}.npy"


def _paths_name(index):
    return f"shard-{index:05d}.paths.txt"


def list_images(source):
    """The image paths of ``source``: a folder (searched recursively) or a list file.

    Parameters
    ----------
    source : str or path-like
        A folder: every file below it whose name ends in an image extension (``.jpg``,
        ``.jpeg``, ``.png``, ``.bmp``, ``.gif``, ``.tif``, ``.tiff``, ``.webp``, ``.ppm``,
        ``.pgm``, ``.pbm``; any case), hidden files and folders excepted, in sorted order.
        A text file: one path per line (UTF-8; blank lines and lines starting with ``#``
        ignored), relative paths taken relative to the file's folder, in file order.

    Returns
    -------
    paths : list of str
        Absolute paths (symbolic links kept as given).

    Raises
    ------
    FileNotFoundError
        ``source`` does not exist.
    ValueError
        No image in the folder or list, or ``source`` is an image rather than a list.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from peal_sk.distributed import list_images
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ["b.png", "a.JPG", "notes.txt"]:
    ...     _ = (folder / name).write_bytes(b"")
    >>> [Path(p).name for p in list_images(folder)]
    ['a.JPG', 'b.png']
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"SOURCE {os.fspath(source)!r} does not exist: give an image folder or a text "
            "file listing image paths."
        )
    if path.is_dir():
        root = Path(os.path.abspath(path))
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                full = os.path.join(dirpath, name)
                if "\n" in full or "\r" in full:
                    warnings.warn(
                        f"skipped {full!r}: a line break in the path", UserWarning, stacklevel=2
                    )
                    continue
                found.append(full)
        if not found:
            raise ValueError(
                f"no image files under {os.fspath(source)!r} (searched recursively for "
                f"{', '.join(IMAGE_EXTENSIONS)})."
            )
        return sorted(found)
    if path.name.lower().endswith(IMAGE_EXTENSIONS):
        raise ValueError(
            f"SOURCE {os.fspath(source)!r} is an image: give the folder that holds the "
            "images, or a text file listing their paths."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"SOURCE {os.fspath(source)!r} is neither a folder nor a UTF-8 text file listing "
            f"image paths ({exc})."
        ) from exc
    base = Path(os.path.abspath(path)).parent
    paths = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        paths.append(os.path.abspath(p if p.is_absolute() else base / p))
    if not paths:
        raise ValueError(f"the list file {os.fspath(source)!r} names no image paths.")
    return paths


def _inputs_digest(paths):
    """sha256 of the shard's paths with each file's size and modification time."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_bytes(obj):
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def _config(embedder, shard_size):
    """What decides the embeddings and the shard boundaries (JSON, compared on reruns)."""
    params = embedder.get_params(deep=False)
    backbone = params.get("backbone")
    if not isinstance(backbone, str):
        import joblib

        params["backbone"] = f"callable:{joblib.hash(backbone)}"
    checkpoint = params.get("checkpoint_path")
    if checkpoint is not None:
        checkpoint = os.path.abspath(checkpoint)
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint_path {checkpoint!r} does not exist.")
        params["checkpoint_path"] = {
            "path": checkpoint,
            "size": os.path.getsize(checkpoint),
            "sha256": _file_sha256(checkpoint),
        }
    config = {k: v for k, v in params.items() if k not in _RUNTIME_PARAMS}
    config["shard_size"] = int(shard_size)
    try:
        return json.loads(json.dumps(config, sort_keys=True))
    except TypeError as exc:
        raise ValueError(f"embedder parameters that JSON cannot store: {exc}") from exc


def _unreadable(paths):
    """``[(path, reason)]`` of the files Pillow cannot decode to RGB."""
    from PIL import Image

    bad = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - any decoder failure means unreadable
            bad.append((p, f"{type(exc).__name__}: {exc}"))
    return bad


def embed_shard(key, params, paths):
    """``(embeddings, embedded_paths, skipped)`` of one shard, in this process.

    Missing and undecodable files are left out and returned as ``[(path, reason)]``; the
    model comes from this process's cache (loaded once per process).
    """
    from ._dask import cached_embedder

    embedder = cached_embedder(key, params)
    present, skipped = [], []
    for p in paths:
        (present if os.path.isfile(p) else skipped).append(p)
    skipped = [(p, "missing or not a file") for p in skipped]

    def run(rows):
        if not rows:
            return np.empty((0, embedder.n_features_out_), dtype=np.float32)
        return np.asarray(embedder.transform(rows), dtype=np.float32)

    try:
        return run(present), present, skipped
    except Exception:
        bad = _unreadable(present)
        if not bad:
            raise
    bad_paths = {p for p, _ in bad}
    skipped = sorted(skipped + bad, key=lambda item: paths.index(item[0]))
    present = [p for p in present if p not in bad_paths]
    return run(present), present, skipped


class _Lock:
    """An exclusive lock on the output folder (released when the process dies)."""

    def __init__(self, out):
        self.path = out / ".lock"
        self.fh = None

    def __enter__(self):
        self.fh = open(self.path, "a")  # noqa: SIM115 - held until __exit__
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return self
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.fh.close()
            raise FileExistsError(
                f"another peal-sk embed is writing to {self.path.parent}; wait for it or "
                "choose another --out."
            ) from exc
        return self

    def __exit__(self, *exc):
        self.fh.close()


def _read_manifest(out):
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{path} is not readable JSON ({exc}); pass force=True / --force."
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a peal-sk embeddings manifest ({FORMAT}).")
    return manifest


def _config_diff(old, new):
    keys = sorted(set(old) | set(new))
    return ", ".join(
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)
    )


def _finished(out, entry, inputs):
    """Whether a manifest entry is a finished shard of the same inputs, files intact."""
    if entry is None or entry.get("inputs") != inputs:
        return False
    for name, digest in (
        (entry.get("file"), entry.get("sha256")),
        (entry.get("paths_file"), entry.get("paths_sha256")),
    ):
        if not name or not (out / name).is_file() or _file_sha256(out / name) != digest:
            return False
    return True


def _remove_shards(out, keep=()):
    for pattern in ("shard-*.npy", "shard-*.paths.txt"):
        for p in out.glob(pattern):
            index = int(p.name[6:11]) if p.name[6:11].isdigit() else None
            if index not in keep:
                p.unlink()


def embed_to_shards(
    source,
    out,
    embedder,
    *,
    shard_size=4096,
    scheduler=None,
    resources=None,
    force=False,
    progress=False,
):
    """Embed every image of ``source`` into ``out`` as shards plus a manifest; resumable.

    The images (see :func:`list_images`) are split into shards of ``shard_size``
    consecutive paths. Each finished shard is written atomically (a temporary file renamed
    into place) as ``shard-NNNNN.npy`` (float32 embeddings) and ``shard-NNNNN.paths.txt``
    (the paths of its rows), then recorded in ``manifest.json``. A rerun with the same
    configuration keeps every shard whose files match the manifest's sha256 and whose
    input files have the same size and modification time, and computes the rest. Images
    that are missing or cannot be decoded are skipped with a warning naming them and
    listed in the manifest (``skipped``).

    Parameters
    ----------
    source : str or path-like
        An image folder (searched recursively) or a text file listing image paths.
    out : str or path-like
        Output folder (created).
    embedder : BackboneEmbedder
        Its parameters define the embeddings (``batch_size``, ``device``, ``progress`` and
        ``cache_dir`` excepted). A named backbone needs pretrained weights
        (``pretrained=True`` or ``checkpoint_path``): random weights would differ between
        processes and reruns.
    shard_size : int, default=4096
        Images per shard.
    scheduler : str, distributed.Client or None, default=None
        None: embed in this process (dask is not needed). An address (``"tcp://host:8786"``)
        or a ``distributed.Client``: one task per shard on that Dask cluster, each worker
        process loading the model once; the workers must see the image files under the
        same paths. This process writes the files.
    resources : dict or None, default=None
        With ``scheduler``: the worker resources each shard's task needs, e.g.
        ``{"GPU": 1}`` for workers started with ``dask worker ADDRESS --resources GPU=1``
        (each GPU then embeds one shard at a time; other workers get none).
    force : bool, default=False
        Replace the shards of another configuration (otherwise a ``FileExistsError``
        names the differences).
    progress : bool, default=False
        Show a progress bar over images (tqdm).

    Returns
    -------
    manifest : dict
        The content of ``manifest.json``: ``n`` (rows embedded), ``dims``, ``shards``,
        ``skipped``, ``reused`` (shards kept from an earlier run), ``complete``,
        ``wall_time_s`` (this call's seconds, listing and model loading included).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from PIL import Image
    >>> from peal_sk.classifier import BackboneEmbedder, create_backbone
    >>> from peal_sk.distributed import embed_to_shards, load_shards
    >>> import torch
    >>> tmp = Path(tempfile.mkdtemp())
    >>> for i in range(5):
    ...     Image.new("RGB", (28, 28), (40 * i, 0, 0)).save(tmp / f"{i}.png")
    >>> kwargs = {"depth": 1, "embed_dim": 16, "num_heads": 2}
    >>> model, _ = create_backbone("vit_small_patch14_dinov2", pretrained=False,
    ...                            img_size=28, backbone_kwargs=kwargs)
    >>> torch.save(model.state_dict(), tmp / "tiny.pth")
    >>> emb = BackboneEmbedder("vit_small_patch14_dinov2", checkpoint_path=str(tmp / "tiny.pth"),
    ...                        img_size=28, backbone_kwargs=kwargs)
    >>> manifest = embed_to_shards(tmp, tmp / "out", emb, shard_size=2)
    >>> manifest["n"], manifest["dims"], len(manifest["shards"])
    (5, 16, 3)
    >>> X, paths = load_shards(tmp / "out")
    >>> X.shape, Path(paths[0]).name
    ((5, 16), '0.png')
    """
    from ._dask import _check_embedder, worker_params

    if not isinstance(shard_size, Integral) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be an int >= 1; got {shard_size!r}.")
    if resources is not None and (
        not isinstance(resources, dict)
        or not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in resources.items())
    ):
        raise ValueError(f"resources must be a dict of name -> number; got {resources!r}.")
    if resources and scheduler is None:
        raise ValueError("resources need a Dask scheduler (scheduler=ADDRESS / --scheduler).")
    _check_embedder(embedder)
    params = embedder.get_params(deep=False)
    if (
        isinstance(params.get("backbone"), str)
        and not params.get("pretrained", True)
        and params.get("checkpoint_path") is None
    ):
        raise ValueError(
            "pretrained=False without checkpoint_path: random weights differ between "
            "processes and reruns, so the shards would not be comparable. Use pretrained "
            "weights or save the weights and pass checkpoint_path."
        )
    start = time.perf_counter()
    paths = list_images(source)
    config = _config(embedder, shard_size)
    key, wparams = worker_params(embedder)
    if scheduler is None:
        from ._dask import cached_embedder

        cached_embedder(key, wparams)  # an unknown backbone or missing weights fail here
    else:
        _import_distributed()  # before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _Lock(out):
        for tmp in out.glob(".shard-*.tmp"):  # left by a killed run
            tmp.unlink()
        for tmp in out.glob(f".{MANIFEST}.*.tmp"):
            tmp.unlink()
        try:
            previous = _read_manifest(out)
        except ValueError:
            if not force:
                raise
            previous = None
        if previous is not None and previous.get("config") != config:
            if not force:
                raise FileExistsError(
                    f"{out} holds embeddings of another configuration "
                    f"({_config_diff(previous.get('config', {}), config)}); pass --force "
                    "(force=True) to replace them, or choose another output folder."
                )
            previous = None
            _remove_shards(out)
        elif previous is None and any(out.glob("shard-*.npy")):
            if not force:
                raise FileExistsError(
                    f"{out} holds shard files but no manifest; pass --force (force=True) to "
                    "replace them, or choose another output folder."
                )
            _remove_shards(out)

        plan = [paths[i : i + shard_size] for i in range(0, len(paths), shard_size)]
        old = {e["index"]: e for e in (previous or {}).get("shards", [])}
        entries = {}
        todo = []
        for index, shard in enumerate(plan):
            inputs = _inputs_digest(shard)
            if _finished(out, old.get(index), inputs):
                entries[index] = old[index]
            else:
                todo.append((index, shard, inputs))
        _remove_shards(out, keep=set(entries))
        reused = len(entries)
        manifest = {
            "format": FORMAT,
            "source": os.path.abspath(source),
            "config": config,
            "n_paths": len(paths),
            "n_shards": len(plan),
            "dims": (previous or {}).get("dims") if entries else None,
            "dtype": "float32",
        }

        def save(complete):
            shards = [entries[i] for i in sorted(entries)]
            manifest.update(
                shards=shards,
                n=int(sum(e["rows"] for e in shards)),
                skipped=[s for e in shards for s in e["skipped"]],
                reused=reused,
                complete=complete,
            )
            write_atomic(out / MANIFEST, _json_bytes(manifest), fsync=True)

        save(complete=not todo)
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(len(s) for _, s, _ in todo), desc="embedding", unit="img")

        def finish(index, inputs, result):
            emb, done, skipped = result
            emb = np.ascontiguousarray(emb, dtype=np.float32)
            for path, reason in skipped:
                warnings.warn(f"skipped unreadable image {path} ({reason})", UserWarning, 3)
            npy, txt = out / _shard_name(index), out / _paths_name(index)
            write_atomic(npy, lambda fh: np.save(fh, emb, allow_pickle=False), fsync=True)
            write_atomic(txt, "".join(p + "\n" for p in done), fsync=True)
            entries[index] = {
                "index": index,
                "file": npy.name,
                "paths_file": txt.name,
                "rows": int(emb.shape[0]),
                "sha256": _file_sha256(npy),
                "paths_sha256": _file_sha256(txt),
                "inputs": inputs,
                "skipped": [{"path": p, "reason": r} for p, r in skipped],
            }
            manifest["dims"] = int(emb.shape[1])
            save(complete=len(entries) == len(plan))
            if bar is not None:
                bar.update(len(done) + len(skipped))

        try:
            if scheduler is None:
                for index, shard, inputs in todo:
                    finish(index, inputs, embed_shard(key, wparams, shard))
            else:
                _run_on_cluster(scheduler, key, wparams, todo, finish, resources)
        finally:
            if bar is not None:
                bar.close()
        manifest["wall_time_s"] = round(time.perf_counter() - start, 3)
        save(complete=len(entries) == len(plan))
        return manifest


def _import_distributed():
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise ImportError(
            "--scheduler / scheduler= needs dask.distributed; install it with "
            "pip install 'peal-sk[dask]'."
        ) from exc
    return Client, as_completed


def _run_on_cluster(scheduler, key, params, todo, finish, resources):
    """One task per shard on a Dask cluster; results written here as they complete."""
    Client, as_completed = _import_distributed()
    from ._dask import _warn_random_weights

    _warn_random_weights(params)
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futures = {}
        for index, shard, inputs in todo:
            future = client.submit(
                # the key names the configuration and the inputs' digest: the same task
                embed_shard,
                key,
                params,
                shard,
                key=f"peal-sk-shard-{key[:16]}-{inputs[:32]}",
                resources=resources or None,
            )
            futures[future] = (index, inputs)
        for future in as_completed(futures):
            index, inputs = futures.pop(future)
            finish(index, inputs, future.result())
            future.release()
    finally:
        if own:
            client.close()


def load_shards(out, *, verify=False):
    """The embeddings and paths of a finished ``peal-sk embed`` folder, in row order.

    Parameters
    ----------
    out : str or path-like
        The folder written by :func:`embed_to_shards` / ``peal-sk embed``.
    verify : bool, default=False
        Check every shard file against the manifest's sha256 first.

    Returns
    -------
    embeddings : ndarray of shape (n, dims), float32
    paths : ndarray of shape (n,), object
        The image path of each row.

    Raises
    ------
    ValueError
        The run is not complete, or a shard does not match the manifest.

    Examples
    --------
    See :func:`embed_to_shards`.
    """
    out = Path(out)
    manifest = _read_manifest(out)
    if manifest is None:
        raise FileNotFoundError(f"{out / MANIFEST} does not exist: run peal-sk embed first.")
    if not manifest.get("complete"):
        raise ValueError(
            f"{out} is incomplete ({len(manifest['shards'])} of {manifest['n_shards']} shards): "
            "rerun peal-sk embed with the same arguments to finish it."
        )
    arrays, paths = [], []
    for entry in manifest["shards"]:
        npy, txt = out / entry["file"], out / entry["paths_file"]
        if verify and (
            _file_sha256(npy) != entry["sha256"] or _file_sha256(txt) != entry["paths_sha256"]
        ):
            raise ValueError(f"{npy} does not match the manifest's sha256.")
        arr = np.load(npy, allow_pickle=False)
        rows = txt.read_text(encoding="utf-8").splitlines()
        if arr.shape[0] != entry["rows"] or len(rows) != entry["rows"]:
            raise ValueError(f"{npy} has {arr.shape[0]} rows; the manifest says {entry['rows']}.")
        arrays.append(arr)
        paths.extend(rows)
    dims = manifest["dims"] or 0
    X = np.concatenate(arrays) if arrays else np.empty((0, dims), dtype=np.float32)
    return X, np.asarray(paths, dtype=object)
