"""One place for the size of temporary blocks, and the shared squared-distance kernel.

Every selector that works on ``n_rows x n_cols`` temporaries (distances, similarities)
asks :func:`block_rows` how many rows one block may have. The budget follows
scikit-learn's ``working_memory`` (:func:`sklearn.set_config`,
:func:`sklearn.config_context`) and is capped at :data:`MAX_BLOCK_MIB`: the kernels here
run fastest with blocks that stay near the CPU caches, and a selection should not hold a
gigabyte of temporaries because scikit-learn's default ``working_memory`` is 1,024 MiB.
Lowering ``working_memory`` below the cap lowers every block size.
"""

# SPDX-License-Identifier: BSD-3-Clause

import functools

import numpy as np
from sklearn import get_config
from sklearn.utils._chunking import get_chunk_n_rows

__all__ = [
    "FAISS_BLAS_MIN",
    "FAISS_QUERY_BLOCK",
    "FAISS_SEARCH_ROWS",
    "MAX_BLOCK_MIB",
    "SMALL_BLOCK_ROWS",
    "block_rows",
    "single_blas_thread",
    "sq_distances",
    "sq_norms",
    "working_memory_mib",
]

#: Upper bound (MiB) on one block of temporaries, whatever ``working_memory`` says.
MAX_BLOCK_MIB = 64
#: Row cap of blocks that loop many times over few columns (BiLAF's assignment to its
#: cores): their temporaries stay below malloc's mmap threshold and are reused
SMALL_BLOCK_ROWS = 2048

# faiss's searches are blocked by faiss itself, and a query's arithmetic depends on the
# block it falls in: those block sizes are fixed (not by ``working_memory``), so that a
# selection does not depend on the configuration.
#: faiss searches queries in blocks of this many rows (``distance_compute_blas_query_bs``)
FAISS_QUERY_BLOCK = 4096
#: below this many queries faiss switches from its BLAS kernel to another one
FAISS_BLAS_MIN = 20
#: query rows per call of a faiss search (16 of faiss's blocks): bounds the outputs and
#: keeps chunk boundaries on faiss's own block boundaries
FAISS_SEARCH_ROWS = 16 * FAISS_QUERY_BLOCK


def working_memory_mib():
    """The block budget in MiB: scikit-learn's ``working_memory``, capped at 64 MiB."""
    return min(float(get_config()["working_memory"]), float(MAX_BLOCK_MIB))


def block_rows(row_bytes, n_rows=None, *, max_rows=None):
    """Rows per block so that one block of ``row_bytes`` per row fits the budget.

    Parameters
    ----------
    row_bytes : int
        Bytes of temporaries one row needs (all of them: e.g. a float64 distance row and
        its float32 copy count ``12 * n_cols``).
    n_rows : int, default=None
        Rows to process; the result never exceeds it (nor falls below 1).
    max_rows : int, default=None
        A further cap (e.g. to keep temporaries below malloc's mmap threshold).

    Returns
    -------
    int
        At least 1.
    """
    rows = get_chunk_n_rows(
        row_bytes=max(1, int(row_bytes)),
        max_n_rows=n_rows,
        working_memory=working_memory_mib(),
    )
    if max_rows is not None:
        rows = min(rows, int(max_rows))
    return max(1, int(rows))


def sq_norms(X):
    """Squared Euclidean norm of every row (accumulated in the input's precision)."""
    return np.einsum("ij,ij->i", X, X)


def sq_distances(A, B, a_sq=None, b_sq=None, *, clip=True):
    """Squared Euclidean distances ``(len(A), len(B))`` by the norm expansion.

    ``(-2 a.b + ||a||^2) + ||b||^2`` in this order, in place on the product so a block
    needs one temporary; clipped at 0 unless ``clip=False`` (a screening pass that
    compares values keeps the unclipped ones). ``a_sq`` / ``b_sq`` are the squared row
    norms when already known.
    """
    a_sq = sq_norms(A) if a_sq is None else a_sq
    b_sq = sq_norms(B) if b_sq is None else b_sq
    D = A @ B.T
    D *= -2
    D += a_sq[:, None]
    D += b_sq[None, :]
    if clip:
        np.maximum(D, 0, out=D)
    return D


@functools.lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_blas_thread():
    """Context manager: BLAS on one thread, for loops of many small matrix-vector products.

    Splitting a product of a few hundred rows over threads costs more in synchronisation
    than it gains (and far more when another process holds a core); scikit-learn's
    k-means limits BLAS the same way around its chunked loops.
    """
    return _controller().limit(limits=1, user_api="blas")
