"""``peal-sk embed``: embeddings of an image folder as resumable shards plus a manifest.

Layout of the output folder::

    manifest.json            format, source, configuration, shard list (rows, sha256, the
                             inputs' digest, skipped images), n, dims, complete
    shard-00000.npy          float32 (rows, dims) embeddings of the shard's readable images
    shard-00000.paths.txt    their paths in row order, one JSON string per line (so that no
                             character of a file name can break a line; shards of older
                             runs, one plain path per line, are still read)
    ...

Every file is written to a temporary name and renamed (``os.replace``), so a killed run
leaves no partial shard; the manifest is written with the first finished shard (a run
that fails before leaves none) and rewritten after each. A rerun verifies the
finished shards (sha256 of both files, and the size and modification time of every input
image) and computes only the others.
"""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import functools
import hashlib
import json
import os
import time
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np

from ..utils._image_files import IMAGE_EXTENSIONS, is_image_name, unreadable_reason
from ..utils._io import write_atomic

__all__ = ["embed_to_shards", "list_images", "load_shards"]

MANIFEST = "manifest.json"
FORMAT = "peal-sk-embeddings/1"
#: how new shards write their paths files: one JSON string per line
_PATHS_ENCODING = "json"
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
            f"source {os.fspath(source)!r} does not exist: give an image folder or a text "
            "file listing image paths."
        )
    if path.is_dir():
        root = Path(os.path.abspath(path))
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if not name.startswith(".") and is_image_name(name):
                    found.append(os.path.join(dirpath, name))
        if not found:
            raise ValueError(
                f"no image files under {os.fspath(source)!r} (searched recursively for "
                f"{', '.join(IMAGE_EXTENSIONS)})."
            )
        return sorted(found)
    if is_image_name(path.name):
        raise ValueError(
            f"source {os.fspath(source)!r} is an image: give the folder that holds the "
            "images, or a text file listing their paths."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"source {os.fspath(source)!r} is neither a folder nor a UTF-8 text file listing "
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
            h.update(os.fsencode(p) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(os.fsencode(p) + b"|missing\n")
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
            raise FileNotFoundError(
                f"checkpoint_path={checkpoint!r} does not exist or is not a file; give a "
                "local weight file (.pth, .safetensors, ...)."
            )
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
    return [(p, reason) for p in paths if (reason := unreadable_reason(p)) is not None]


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
                "choose another output folder."
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
        raise ValueError(f"{path} is not readable JSON ({exc}); pass force=True.") from exc
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


def _encode_paths(paths):
    """The paths file: one JSON string per line (any character of a name is escaped)."""
    return "".join(json.dumps(p) + "\n" for p in paths)


def _decode_paths(text, encoding):
    """The paths of a paths file written with ``encoding`` ("json", or None: older runs)."""
    lines = text.split("\n")  # never str.splitlines: it also splits at \f, \x85, U+2028 ...
    if lines and lines[-1] == "":
        lines.pop()
    if encoding == _PATHS_ENCODING:
        return [json.loads(line) for line in lines]
    return lines  # older runs: the paths as they are (names with \n or \r were skipped)


class _ShardFolder:
    """The output folder of one :func:`embed_to_shards` call, in its named steps.

    :meth:`read` the previous manifest, :meth:`reconcile` it with this configuration,
    :meth:`plan` the shards (keeping the finished ones), :meth:`write_shard` each
    computed one, :meth:`save` the manifest. The manifest is first written with the first
    finished shard (or at the end when every shard is kept): a run that fails before any
    shard leaves none behind to refuse the corrected rerun.
    """

    def __init__(self, out, source, config, n_paths):
        self.out = out
        self.config = config
        self.entries = {}
        self.reused = 0
        self.manifest = {
            "format": FORMAT,
            "source": os.path.abspath(source),
            "config": config,
            "n_paths": n_paths,
            "dtype": "float32",
        }

    def read(self, *, force):
        """The previous manifest, or None (none, or unreadable and ``force``)."""
        for tmp in self.out.glob(".shard-*.tmp"):  # left by a killed run
            tmp.unlink()
        for tmp in self.out.glob(f".{MANIFEST}.*.tmp"):
            tmp.unlink()
        try:
            return _read_manifest(self.out)
        except ValueError:
            if not force:
                raise
            return None

    def reconcile(self, previous, *, force):
        """The previous manifest when it is of this configuration, else None.

        Shards of another configuration are refused unless ``force`` (then removed with
        their manifest); a manifest that lists no shard holds nothing to keep and is
        replaced.
        """
        if previous is not None and previous.get("config") != self.config:
            if not force and previous.get("shards"):
                raise FileExistsError(
                    f"{self.out} holds embeddings of another configuration "
                    f"({_config_diff(previous.get('config', {}), self.config)}); pass "
                    "force=True to replace them, or choose another output folder."
                )
            (self.out / MANIFEST).unlink()
            _remove_shards(self.out)
            return None
        if previous is None and any(self.out.glob("shard-*.npy")):
            if not force:
                raise FileExistsError(
                    f"{self.out} holds shard files but no manifest; pass force=True to "
                    "replace them, or choose another output folder."
                )
            _remove_shards(self.out)
        return previous

    def plan(self, paths, shard_size, previous):
        """``[(index, paths, inputs digest)]`` of the shards to compute; keeps the rest."""
        shards = [paths[i : i + shard_size] for i in range(0, len(paths), shard_size)]
        old = {e["index"]: e for e in (previous or {}).get("shards", [])}
        todo = []
        for index, shard in enumerate(shards):
            inputs = _inputs_digest(shard)
            if _finished(self.out, old.get(index), inputs):
                self.entries[index] = old[index]
            else:
                todo.append((index, shard, inputs))
        _remove_shards(self.out, keep=set(self.entries))
        self.reused = len(self.entries)
        self.manifest["n_shards"] = len(shards)
        self.manifest["dims"] = (previous or {}).get("dims") if self.entries else None
        return todo

    def write_shard(self, index, inputs, result):
        """Write one computed shard's two files atomically, then the manifest."""
        emb, done, skipped = result
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        for path, reason in skipped:
            warnings.warn(f"skipped unreadable image {path} ({reason})", UserWarning, 3)
        npy, txt = self.out / _shard_name(index), self.out / _paths_name(index)
        write_atomic(npy, lambda fh: np.save(fh, emb, allow_pickle=False), fsync=True)
        write_atomic(txt, _encode_paths(done), fsync=True)
        self.entries[index] = {
            "index": index,
            "file": npy.name,
            "paths_file": txt.name,
            "paths_encoding": _PATHS_ENCODING,
            "rows": int(emb.shape[0]),
            "sha256": _file_sha256(npy),
            "paths_sha256": _file_sha256(txt),
            "inputs": inputs,
            "skipped": [{"path": p, "reason": r} for p, r in skipped],
        }
        self.manifest["dims"] = int(emb.shape[1])
        self.save()

    def save(self, **extra):
        """Write the manifest atomically (``complete`` when every shard is recorded)."""
        shards = [self.entries[i] for i in sorted(self.entries)]
        self.manifest.update(
            shards=shards,
            n=int(sum(e["rows"] for e in shards)),
            skipped=[s for e in shards for s in e["skipped"]],
            reused=self.reused,
            complete=len(shards) == self.manifest["n_shards"],
            **extra,
        )
        write_atomic(self.out / MANIFEST, _json_bytes(self.manifest), fsync=True)
        return self.manifest


def _check_shard_args(shard_size, scheduler, resources):
    if not isinstance(shard_size, Integral) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be an int >= 1; got shard_size={shard_size!r}.")
    if resources is not None and (
        not isinstance(resources, dict)
        or not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in resources.items())
    ):
        raise ValueError(f"resources must be a dict of name -> number; got {resources!r}.")
    if resources and scheduler is None:
        raise ValueError("resources need a Dask scheduler (scheduler=ADDRESS).")


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
    from ._dask import _check_embedder, check_device, random_weights, worker_params

    _check_shard_args(shard_size, scheduler, resources)
    _check_embedder(embedder)
    params = embedder.get_params(deep=False)
    if random_weights(params):
        raise ValueError(
            "pretrained=False without checkpoint_path: random weights differ between "
            "processes and reruns, so the shards would not be comparable. Use pretrained "
            "weights or save the weights and pass checkpoint_path."
        )
    check_device(params.get("device", "auto"), here=scheduler is None)
    start = time.perf_counter()
    paths = list_images(source)
    config = _config(embedder, shard_size)
    key, wparams = worker_params(embedder)
    # the model loads (or the cluster answers) before anything is written
    with _shard_runner(scheduler, key, wparams, resources) as run:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with _Lock(out):
            folder = _ShardFolder(out, source, config, len(paths))
            previous = folder.reconcile(folder.read(force=force), force=force)
            todo = folder.plan(paths, shard_size, previous)
            bar = None
            if progress and todo:
                from tqdm.auto import tqdm

                bar = tqdm(total=sum(len(s) for _, s, _ in todo), desc="embedding", unit="img")
            try:
                for index, inputs, result in run(todo):
                    folder.write_shard(index, inputs, result)
                    if bar is not None:
                        bar.update(len(result[1]) + len(result[2]))
            finally:
                if bar is not None:
                    bar.close()
            return folder.save(wall_time_s=round(time.perf_counter() - start, 3))


def _import_distributed():
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise ImportError(
            "scheduler=ADDRESS needs dask.distributed; install it with pip install 'peal-sk[dask]'."
        ) from exc
    return Client, as_completed


@contextlib.contextmanager
def _shard_runner(scheduler, key, params, resources):
    """``run(todo)``, yielding ``(index, inputs, (embeddings, paths, skipped))`` per shard.

    In this process the model is loaded before ``run`` is returned (an unknown backbone,
    missing weights or a bad option fail here); with a scheduler the cluster is connected
    first (an unreachable address fails here), and the results come as they complete.
    """
    if scheduler is None:
        from ._dask import cached_embedder

        cached_embedder(key, params)
        yield lambda todo: ((i, inputs, embed_shard(key, params, s)) for i, s, inputs in todo)
        return
    Client, as_completed = _import_distributed()
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        yield functools.partial(_on_cluster, client, as_completed, key, params, resources)
    finally:
        if own:
            client.close()


def _on_cluster(client, as_completed, key, params, resources, todo):
    """One task per shard on a Dask cluster; results yielded here as they complete."""
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
        yield index, inputs, future.result()
        future.release()


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
        rows = _decode_paths(
            txt.read_text(encoding="utf-8", errors="surrogateescape"), entry.get("paths_encoding")
        )
        if arr.shape[0] != entry["rows"] or len(rows) != entry["rows"]:
            raise ValueError(f"{npy} has {arr.shape[0]} rows; the manifest says {entry['rows']}.")
        arrays.append(arr)
        paths.extend(rows)
    dims = manifest["dims"] or 0
    X = np.concatenate(arrays) if arrays else np.empty((0, dims), dtype=np.float32)
    return X, np.asarray(paths, dtype=object)
