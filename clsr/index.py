"""Index builds: BM25 (Lucene, via Anserini) and dense (flat embeddings), each with a manifest.

Every index directory holds ``clsr-index.json``: what kind of index it is, what built it and from
what. Searchers read it to know how to search, and to refuse an index that does not match.

Builds are atomic: the index is written into a hidden temporary sibling and renamed into place
only when complete, so an interrupted build never leaves a directory that looks like an index.
Rebuilding over an existing index needs ``overwrite=True``.

Run ``python -m clsr.index --help`` (or ``clsr index``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from . import __version__
from .data import Document

log = logging.getLogger(__name__)

MANIFEST_NAME = "clsr-index.json"
BM25_K1, BM25_B = 0.9, 0.4  # Pyserini's defaults, which its published BEIR "flat" figures use.


class InvalidIndexError(RuntimeError):
    """An index that cannot be built, read, or used as asked."""


def write_manifest(directory: Path, kind: str, documents: int, **fields) -> dict:
    manifest = {
        "kind": kind,
        "clsr_version": __version__,
        "documents": documents,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        raise InvalidIndexError(f"{directory} is not a clsr index (no {MANIFEST_NAME}); build one with `clsr index`")
    return json.loads(path.read_text())


def directory_bytes(directory: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `target` that becomes `target` only if the block succeeds."""
    target = Path(target).resolve()
    if target.exists() and not overwrite:
        raise InvalidIndexError(f"{target} already exists; pass --overwrite to rebuild it")
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        yield building
        if target.exists():
            # Move the old index aside first so a failure here still leaves one complete index.
            old = building.with_name(building.name + ".old")
            os.replace(target, old)
            os.replace(building, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(building, target)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _write_json_collection(documents: Iterable[Document], directory: Path) -> int:
    count = 0
    with open(directory / "docs.jsonl", "w", encoding="utf-8") as f:
        for doc in documents:
            f.write(json.dumps({"id": doc.id, "contents": doc.text}) + "\n")
            count += 1
    return count


def run_anserini_indexer(args: Sequence[str]) -> None:
    """Anserini's IndexCollection in this process's JVM (what `python -m pyserini.index.lucene` runs)."""
    from .jvm import java_class

    # Anserini logs every setting at INFO; keep that for `clsr -v` only.
    quiet = [] if log.isEnabledFor(logging.INFO) else ["-quiet"]
    java_class("io.anserini.index.IndexCollection").main([*args, *quiet])


def build_bm25_index(documents: Iterable[Document], index_dir: str | os.PathLike, *, source: str = "",
                     threads: int = 1, overwrite: bool = False) -> dict:
    """A Lucene BM25 index with no positions, doc vectors or raw text (smallest and fastest)."""
    with atomic_directory(index_dir, overwrite) as building, tempfile.TemporaryDirectory() as collection:
        count = _write_json_collection(documents, Path(collection))
        start = time.perf_counter()
        run_anserini_indexer(["-collection", "JsonCollection", "-input", collection, "-index", str(building),
                              "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads)])
        seconds = time.perf_counter() - start
        return write_manifest(building, "bm25", count, source=source, k1=BM25_K1, b=BM25_B,
                              build_seconds=round(seconds, 3))


def build_dense_index(ids: Sequence[str], embeddings: np.ndarray, index_dir: str | os.PathLike, *,
                      encoder: dict, source: str = "", overwrite: bool = False) -> dict:
    """A flat index: float32 embeddings.npy plus ids.txt, searched exactly by inner product."""
    if len(ids) != len(embeddings):
        raise InvalidIndexError(f"{len(ids)} ids but {len(embeddings)} embeddings")
    with atomic_directory(index_dir, overwrite) as building:
        np.save(building / "embeddings.npy", np.ascontiguousarray(embeddings, dtype=np.float32))
        (building / "ids.txt").write_text("\n".join(ids), encoding="utf-8")
        return write_manifest(building, "dense", len(ids), source=source, dim=int(embeddings.shape[1]),
                              encoder=encoder)


def main(argv: Sequence[str] | None = None) -> None:
    import sys

    from .cli import main as cli_main

    cli_main(["index", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    main()
