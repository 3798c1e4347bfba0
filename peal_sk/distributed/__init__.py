"""Embedding beyond one process: Dask collections and sharded embedding folders.

``import peal_sk.distributed`` needs neither torch nor dask: they are imported when a
function runs. :func:`embed_dask` and :class:`DaskEmbedder` need the ``[dask]`` extra
(``pip install "peal-sk[dask]"``) and the ``[torch]`` extra; :func:`embed_to_shards`
(``peal-sk embed``) needs dask only when given a scheduler address.
"""

# SPDX-License-Identifier: BSD-3-Clause

from ._dask import DaskEmbedder, embed_dask
from ._shards import embed_to_shards, list_images, load_shards

__all__ = ["DaskEmbedder", "embed_dask", "embed_to_shards", "list_images", "load_shards"]
