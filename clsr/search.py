"""Search a clsr index: the manifest says which searcher reads it.

Run ``python -m clsr.search --index IDX --topics scifact --output run.trec`` (or ``clsr search``);
the flags mirror ``python -m pyserini.search.lucene``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from . import __version__
from .dense import DenseEncoder, EncoderConfig
from .evaluate import Run
from .index import BM25_K1, BM25_B, InvalidIndexError, read_manifest


class Hit(NamedTuple):
    docid: str
    score: float


class Bm25Searcher:
    """Pyserini's LuceneSearcher with BM25 (k1=0.9, b=0.4 unless given)."""

    def __init__(self, index_dir: str | os.PathLike, k1: float = BM25_K1, b: float = BM25_B):
        from .jvm import pyserini_lucene

        self.manifest = read_manifest(index_dir)
        self._searcher = pyserini_lucene().LuceneSearcher(str(index_dir))
        self._searcher.set_bm25(k1, b)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return [Hit(h.docid, float(h.score)) for h in self._searcher.search(query, k)]

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        qids = list(queries)
        results = self._searcher.batch_search([queries[q] for q in qids], qids, k, threads)
        return {qid: [Hit(h.docid, float(h.score)) for h in results[qid]] for qid in qids}


class DenseSearcher:
    """Exact inner-product search (FAISS flat) over a dense index's embeddings."""

    def __init__(self, index_dir: str | os.PathLike, encoder: DenseEncoder | None = None, dtype: str = "auto"):
        import faiss

        self.manifest = read_manifest(index_dir)
        if self.manifest["kind"] != "dense":
            raise InvalidIndexError(f"{index_dir} is a {self.manifest['kind']} index, not a dense one")
        indexed_with = EncoderConfig.from_dict(self.manifest["encoder"])
        if encoder is not None and encoder.config != indexed_with:
            raise InvalidIndexError(
                f"the query encoder does not match the index.\n  index {index_dir}: {indexed_with}\n"
                f"  query encoder: {encoder.config}")
        self.encoder = encoder or DenseEncoder(indexed_with, dtype=dtype)
        directory = Path(index_dir)
        embeddings = np.load(directory / "embeddings.npy")
        self.ids = (directory / "ids.txt").read_text(encoding="utf-8").split("\n")[:len(embeddings)]
        self.index = faiss.IndexFlatIP(embeddings.shape[1])
        self.index.add(embeddings)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        if vectors.ndim != 2 or vectors.shape[1] != self.index.d:
            raise ValueError(f"query vectors have shape {vectors.shape}, the index holds {self.index.d}-d vectors")
        scores, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, self.index.ntotal))
        return [[Hit(self.ids[r], float(s)) for r, s in zip(row, score) if r >= 0] for row, score in zip(rows, scores)]

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_vectors(self.encoder.encode_queries([query]), k)[0]

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        qids = list(queries)
        vectors = self.encoder.encode_queries([queries[q] for q in qids], progress=len(qids) > 100,
                                              desc="encoding queries")
        return dict(zip(qids, self.search_vectors(vectors, k)))


def open_searcher(index_dir: str | os.PathLike, **options) -> Bm25Searcher | DenseSearcher:
    """The searcher for whatever kind of index `index_dir` is."""
    kind = read_manifest(index_dir)["kind"]
    if kind == "bm25":
        return Bm25Searcher(index_dir, **options)
    if kind == "dense":
        return DenseSearcher(index_dir, **options)
    raise InvalidIndexError(f"{index_dir}: clsr {__version__} cannot search {kind!r} indexes")


def main(argv: Sequence[str] | None = None) -> None:
    import sys

    from .cli import main as cli_main

    cli_main(["search", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    main()
