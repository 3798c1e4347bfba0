"""One way to write a file so that a killed or failed write never leaves it half written."""

# SPDX-License-Identifier: BSD-3-Clause

import contextlib
import os
import shutil
import threading
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path, data, *, overwrite=True, fsync=False, by_name=False):
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    The temporary name carries the process and thread ids, so concurrent writers never
    share one, and it is removed whatever happens. A reader sees the previous file or
    the complete new one, never a part.

    Parameters
    ----------
    path : str or Path
    data : bytes, str or callable
        The content (``str`` is written as UTF-8), or ``write(fh)`` called with the
        temporary file opened in binary mode (e.g. ``lambda fh: np.save(fh, a)``).
    overwrite : bool, default=True
        Replace an existing ``path`` (an atomic rename). With False an existing ``path``
        is never replaced: :class:`FileExistsError` (a hard link, or an exclusive create
        where the file system has no hard links).
    fsync : bool, default=False
        Flush the file to disk before it takes the name (for results that are expensive
        to recompute and that a later run trusts without reading them back).
    by_name : bool, default=False
        With a callable ``data``: call ``write(name)`` with the temporary file's name (a
        ``str``) instead of an open file, for writers that take a file name (e.g.
        ``safetensors.torch.save_file``, ``torch.onnx.export``). Only that one file is
        renamed: a writer that adds files beside it needs its own scheme.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    if by_name:  # the name keeps the suffix: some writers add theirs (np.save adds .npy)
        tmp = tmp.with_name(tmp.name + path.suffix)
    try:
        if by_name:
            if not callable(data):
                raise TypeError("by_name=True needs a callable data, write(name).")
            data(os.fspath(tmp))
            if fsync:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
        else:
            with open(tmp, "wb") as fh:
                if callable(data):
                    data(fh)
                else:
                    fh.write(data.encode() if isinstance(data, str) else data)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # atomic, fails when path exists
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system: exclusive create instead
            with open(tmp, "rb") as src, open(path, "xb") as dst:
                shutil.copyfileobj(src, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
