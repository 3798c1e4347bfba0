"""Per-image results of a frozen network, computed once and looked up by the image's content.

An active-learning loop passes the same images to the model again and again: the pool
at every query (a new array each cycle, as labelled images leave it), the labelled
images at every fit. What a frozen part of the network makes of an image never changes,
so :class:`RowStore` keeps it under a digest of the image itself (its pixels, or a
file's path, size and modification time): a row computed once, for any array it came
in, is never computed again. A store lives in memory, or in a folder (``cache_dir``) as
memory-mapped segments that later processes reuse.

A segment is written as a values file and then a keys file, each through a temporary
name: a process killed while writing leaves no segment, or a complete one.
"""

# SPDX-License-Identifier: BSD-3-Clause

import collections
import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from ..utils._io import write_atomic
from ._images import ImageSource

__all__ = ["RowStore", "get_store", "row_keys", "subset"]

#: bytes of a row key (a BLAKE2b digest)
KEY_BYTES = 16
#: stores kept by :func:`get_store` in one process (the least recently used goes first)
MAX_STORES = 4
#: float16 storage keeps about 3 significant digits: relative error <= 2**-11 per value
FLOAT16_RTOL = 2.0**-11

_stores = collections.OrderedDict()
_stores_lock = threading.Lock()


def _digest(*parts):
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    for part in parts:
        h.update(part)
    return h.digest()


def row_keys(source):
    """One digest per image of ``source``: same content, same key.

    Arrays and PIL images are keyed by their pixels (with dtype, shape or mode), files by
    path, size and modification time (a rewritten file is a new image), feature rows by
    their values.

    Parameters
    ----------
    source : ImageSource

    Returns
    -------
    keys : ndarray of dtype S16, shape (n_images,)
    """
    data = source.data
    if source.kind == "paths":
        keys = []
        for p in data:
            st = os.stat(p)
            keys.append(_digest(f"path|{os.fspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode()))
    elif source.kind == "pil":
        keys = [
            _digest(
                f"pil|{im.mode}|{im.size}|".encode(), im.tobytes(), repr(im.getpalette()).encode()
            )
            for im in data
        ]
    elif isinstance(data, np.ndarray):
        head = f"{source.kind}|{data.dtype}|{data.shape[1:]}|".encode()
        keys = [_digest(head, np.ascontiguousarray(row).data) for row in data]
    else:  # "list": arrays of their own sizes
        keys = []
        for item in data:
            arr = np.ascontiguousarray(item)
            keys.append(_digest(f"list|{arr.dtype}|{arr.shape}|".encode(), arr.data))
    return np.asarray(keys, dtype=f"S{KEY_BYTES}").reshape(len(keys))


def subset(source, index):
    """The images ``index`` of ``source``, as an :class:`ImageSource` of the same kind."""
    index = np.asarray(index, dtype=np.intp)
    if isinstance(source.data, np.ndarray):
        data = source.data[index]
    else:
        data = [source.data[i] for i in index]
    return ImageSource(source.kind, data, name=source.name)


class RowStore:
    """Arrays of one shape stored under row keys, in memory or memory-mapped in a folder.

    Parameters
    ----------
    item_shape : tuple of int
        The shape of one stored value (e.g. ``(112, 8, 8)`` for a feature map).
    dtype : {"float32", "float16"}, default="float32"
        Storage type; values come back as float32. float16 halves the memory and disk
        and rounds each value to 11 significant bits (relative error at most
        ``FLOAT16_RTOL``).
    folder : path-like or None, default=None
        Keep the values there as ``.npy`` segments (memory-mapped when read) and reuse
        those that earlier processes wrote; None keeps them in memory.
    """

    def __init__(self, item_shape, *, dtype="float32", folder=None):
        self.item_shape = tuple(int(s) for s in item_shape)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float16):
            raise ValueError(f"dtype must be 'float32' or 'float16'; got dtype={dtype!r}.")
        self.folder = None if folder is None else Path(folder)
        self._segments = []  # arrays (n_i, *item_shape)
        self._starts = [0]
        self._index = {}  # key -> row over all segments
        self._lock = threading.Lock()
        if self.folder is not None:
            self._load()

    def __len__(self):
        return self._starts[-1]

    def _append(self, keys, values):
        start = self._starts[-1]
        self._segments.append(values)
        self._starts.append(start + len(values))
        for i, k in enumerate(keys.tolist()):
            self._index.setdefault(k, start + i)

    def _load(self):
        if not self.folder.is_dir():
            return
        for keys_file in sorted(self.folder.glob("seg-*.keys.npy")):
            values_file = keys_file.with_name(keys_file.name.replace(".keys.npy", ".npy"))
            try:
                keys = np.load(keys_file, allow_pickle=False)
                values = np.load(values_file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError):
                continue  # a damaged segment is computed again
            ok = (
                keys.dtype == np.dtype(f"S{KEY_BYTES}")
                and values.dtype == self.dtype
                and values.shape[1:] == self.item_shape
                and len(values) == len(keys)
            )
            if ok:
                self._append(keys, values)

    def positions(self, keys):
        """The stored row of each key, -1 where it is missing."""
        get = self._index.get
        return np.fromiter((get(k, -1) for k in keys.tolist()), dtype=np.int64, count=len(keys))

    def add(self, keys, values):
        """Store ``values`` (float32, one per key) as a new segment."""
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape != (len(keys), *self.item_shape):
            raise ValueError(
                f"values of shape {values.shape} do not match {len(keys)} keys of items "
                f"{self.item_shape}."
            )
        with self._lock:
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                name = f"seg-{len(self._segments):06d}-{os.getpid()}-{threading.get_ident()}"
                values_file = self.folder / f"{name}.npy"
                write_atomic(values_file, lambda fh: np.save(fh, values, allow_pickle=False))
                write_atomic(
                    self.folder / f"{name}.keys.npy",
                    lambda fh: np.save(fh, np.asarray(keys), allow_pickle=False),
                )
                values = np.load(values_file, mmap_mode="r", allow_pickle=False)
            self._append(np.asarray(keys), values)

    def take(self, rows):
        """float32 values of stored ``rows`` (from :meth:`positions`), in order."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.item_shape), dtype=np.float32)
        seg = np.searchsorted(self._starts, rows, side="right") - 1
        for s in np.unique(seg):
            where = np.flatnonzero(seg == s)
            out[where] = self._segments[s][rows[where] - self._starts[s]]
        return out

    def fill(self, keys, compute, *, chunk=None):
        """Values for every key, computing the missing ones with ``compute``.

        Parameters
        ----------
        keys : ndarray of S16
        compute : callable
            ``compute(index)`` returns float32 values for the positions ``index`` of
            ``keys`` that are missing (duplicates among them are computed once).
        chunk : int or None, default=None
            Compute and store the missing rows this many at a time (a killed run keeps
            what it finished); all at once when None.

        Returns
        -------
        values : ndarray of float32, shape (len(keys), *item_shape)
        """
        rows = self.positions(keys)
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            # one computation per distinct missing key
            _, first = np.unique(keys[missing], return_index=True)
            todo = missing[np.sort(first)]
            step = len(todo) if chunk is None else max(1, int(chunk))
            for start in range(0, len(todo), step):
                part = todo[start : start + step]
                self.add(keys[part], compute(part))
            rows = self.positions(keys)
        return self.take(rows)


def get_store(ident, item_shape, *, dtype="float32", cache_dir=None):
    """The process's store for ``ident`` (a frozen network's identity), made on first use.

    With ``cache_dir``, the store's segments live in
    ``cache_dir/features/<digest of ident>/`` and are shared with other processes.
    """
    digest = hashlib.sha256(repr((ident, tuple(item_shape), str(dtype))).encode()).hexdigest()
    folder = None if cache_dir is None else Path(cache_dir) / "features" / digest[:32]
    key = (digest, None if folder is None else os.fspath(folder))
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = RowStore(item_shape, dtype=dtype, folder=folder)
            _stores[key] = store
        _stores.move_to_end(key)
        while len(_stores) > MAX_STORES:
            _stores.popitem(last=False)
    return store


def clear_stores():
    """Forget the in-memory stores of this process (files in ``cache_dir`` stay)."""
    with _stores_lock:
        _stores.clear()
