"""The dense index: float32 ``embeddings.npy`` plus ``ids.txt``, searched exactly by inner product."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from clsr.errors import InvalidIndexError
from clsr.index.atomic import atomic_directory
from clsr.index.manifest import write_manifest


def build_dense_index(ids: Sequence[str], embeddings: np.ndarray, index_dir: str | os.PathLike, *,
                      encoder: dict, source: str = "", overwrite: bool = False, encoding: dict | None = None) -> dict:
    """A flat index: float32 embeddings.npy plus ids.txt, searched exactly by inner product.

    ``encoding`` is the encoder's backend and dtype (:attr:`clsr.encode.dense.DenseEncoder.encoding`),
    recorded so that searchers encode queries the way the documents were encoded. `index_dir` is refused as
    `clsr.index.atomic.check_replaceable` says (``source``, the corpus, is a source).
    """
    if len(ids) != len(embeddings):
        raise InvalidIndexError(f"{len(ids)} ids but {len(embeddings)} embeddings")
    with atomic_directory(index_dir, overwrite, sources={"the corpus": source}) as building:
        np.save(building / "embeddings.npy", np.ascontiguousarray(embeddings, dtype=np.float32))
        (building / "ids.txt").write_text("\n".join(ids), encoding="utf-8")
        return write_manifest(building, "dense", len(ids), source=source, dim=int(embeddings.shape[1]),
                              encoder=encoder, encoding=encoding)
