"""Lucene indexes built by Anserini in this process's JVM: BM25 over a JsonCollection, and impact indexes
over a JsonVectorCollection (``-impact -pretokenized``) that stock ``LuceneImpactSearcher`` searches."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from clsr.data import Document
from clsr.index.atomic import atomic_directory
from clsr.index.concepts import concept_term
from clsr.index.manifest import write_manifest
from clsr.index.streaming import CHUNK_ROWS, read_rows, row_chunks
from clsr.index.words import DocWords
from clsr.progress import elapsed_bar, progress_bar

BM25_K1, BM25_B = 0.9, 0.4  # Pyserini's defaults, which its published BEIR "flat" figures use.


def _write_json_collection(documents: Iterable[Document], directory: Path) -> int:
    count = 0
    with open(directory / "docs.jsonl", "w", encoding="utf-8") as f:
        for doc in documents:
            f.write(json.dumps({"id": doc.id, "contents": doc.text}) + "\n")
            count += 1
    return count


def run_anserini_indexer(args: Sequence[str]) -> None:
    """Anserini's IndexCollection in this process's JVM (what `python -m pyserini.index.lucene` runs)."""
    from clsr.jvm import indexing_buffer_mb, java_class, java_path

    # Anserini logs every setting at INFO; keep that for `clsr -v` only (which lowers the root logger to INFO;
    # clsr's own logger is at INFO always).
    quiet = [] if logging.getLogger().isEnabledFor(logging.INFO) else ["-quiet"]
    args = [java_path(a) if previous in ("-input", "-index") else a for previous, a in zip(["", *args], args)]
    java_class("io.anserini.index.IndexCollection").main([*args, "-memoryBuffer", str(indexing_buffer_mb()), *quiet])


def build_bm25_index(documents: Iterable[Document], index_dir: str | os.PathLike, *, source: str = "",
                     threads: int = 1, overwrite: bool = False) -> dict:
    """A Lucene BM25 index with no positions, doc vectors or raw text (smallest and fastest).

    `index_dir` is refused as `clsr.index.atomic.check_replaceable` says (``source``, the corpus, is a source).
    """
    with atomic_directory(index_dir, overwrite, sources={"the corpus": source}) as building, \
            tempfile.TemporaryDirectory() as collection:
        count = _write_json_collection(documents, Path(collection))
        start = time.perf_counter()
        run_anserini_indexer(["-collection", "JsonCollection", "-input", collection, "-index", str(building),
                              "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads)])
        seconds = time.perf_counter() - start
        return write_manifest(building, "bm25", count, source=source, k1=BM25_K1, b=BM25_B,
                              build_seconds=round(seconds, 3))


DOCUMENTS_PER_SHARD = 500_000


Impacts = np.ndarray | Callable[[int, int], np.ndarray]
"""(n, K) integer impacts, or a function of ``(start, stop)`` giving rows ``start:stop``'s: e.g. quantised a chunk at a
time from memory-mapped activations, so that no (n, K) int64 array is ever made."""


def impact_rows(impacts: Impacts, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of :data:`Impacts`, in memory."""
    return impacts(start, stop) if callable(impacts) else np.asarray(impacts[start:stop])


VECTOR_ROWS = 8192
"""Rows turned into Python lists at once when writing vectors: a row of K latents costs K Python ints (36 bytes each
with its list slot, latents past 256 not being cached), so 65,536 rows of 128 would hold 300 MB; 8,192 hold 40 MB
and write as fast."""


def _write_vector_shards(latents: np.ndarray, impacts: Impacts, ids: Sequence[str], directory: Path,
                         shards: int, progress: bool, words: DocWords | None = None,
                         chunk_rows: int = CHUNK_ROWS) -> int:
    """JsonVectorCollection files ({"id", "contents", "vector"}), each passage's concepts and, if given, its
    words; returns the number of postings. ``latents`` (e.g. memory-mapped) and ``impacts`` are read
    ``chunk_rows`` rows at a time."""
    postings = 0
    bounds = np.linspace(0, len(ids), shards + 1).astype(int)
    what = "writing concept and word vectors" if words is not None else "writing concept vectors"
    with progress_bar(total=len(ids), desc=what, unit="doc", enabled=progress) as bar:
        for shard, (first, last) in enumerate(zip(bounds[:-1], bounds[1:])):
            with open(directory / f"vectors-{shard:05d}.jsonl", "w", encoding="utf-8") as f:
                for start, stop in row_chunks(int(last - first), min(chunk_rows, VECTOR_ROWS)):
                    start, stop = start + int(first), stop + int(first)
                    # tolist(): Python ints hash and format much faster than numpy scalars.
                    chunk_latents = read_rows(latents, start, stop).tolist()
                    chunk_impacts = impact_rows(impacts, start, stop).tolist()
                    for row, (row_latents, row_impacts) in enumerate(zip(chunk_latents, chunk_impacts), start):
                        vector = {concept_term(latent): impact
                                  for latent, impact in zip(row_latents, row_impacts) if impact > 0}
                        if words is not None:
                            vector.update(words.vector(row))
                        postings += len(vector)
                        f.write(json.dumps({"id": ids[row], "contents": "", "vector": vector}) + "\n")
                    bar.update(stop - start)
    return postings


def index_impact_vectors(latents: np.ndarray, impacts: Impacts, ids: Sequence[str], lucene_dir: Path, *,
                         threads: int = 1, progress: bool = True, words: DocWords | None = None,
                         chunk_rows: int = CHUNK_ROWS) -> tuple[int, dict[str, float]]:
    """Lucene impact index of (latent, integer impact) rows, and each passage's word impacts if ``words`` are
    given (`clsr.index.words`: terms ``w:<stem>``, which no concept term equals), via a JsonVectorCollection and
    Anserini. ``latents`` (n, K) may be a memory map and ``impacts`` a function of a chunk's rows (:data:`Impacts`):
    they are read ``chunk_rows`` rows at a time.

    Returns the number of postings and the seconds spent writing the collection and indexing it.
    """
    with tempfile.TemporaryDirectory() as collection:
        start = time.perf_counter()
        shards = max(threads, -(-len(ids) // DOCUMENTS_PER_SHARD))  # one file per thread at least
        postings = _write_vector_shards(latents, impacts, ids, Path(collection), shards, progress, words,
                                        chunk_rows)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        with elapsed_bar(f"indexing {len(ids)} documents with Lucene ({threads} thread{'s' * (threads > 1)})",
                         enabled=progress):
            run_anserini_indexer(["-collection", "JsonVectorCollection", "-input", collection, "-index",
                                  str(lucene_dir), "-generator", "DefaultLuceneDocumentGenerator", "-impact",
                                  "-pretokenized", "-threads", str(threads), "-optimize"])  # -optimize: one segment
        return postings, {"write_s": write_s, "lucene_s": time.perf_counter() - start}
