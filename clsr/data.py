"""Corpora, topics and qrels as streams, from BEIR folders, files, or ir_datasets ids.

A *source* is one of:

* a BEIR-layout folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``);
* a name under ``$CLSR_DATA`` (default ``../shared/data`` beside a source checkout), e.g. ``scifact``;
* a file: ``.jsonl`` (BEIR ``{_id, title, text}`` or Pyserini ``{id, contents}``), ``.tsv``
  (MS MARCO ``id<TAB>text``), or TREC / BEIR qrels;
* an ``ir_datasets`` id such as ``beir/scifact/test`` (needs a network connection on first use).

A document's text is ``title + " " + text`` (the BEIR convention, as in Pyserini's "flat" indexes).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ClsrError

log = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]
"""query id -> {document id -> relevance grade}."""


class DataError(ClsrError, ValueError):
    """Input that clsr cannot read; the message names the file and line."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str


def document_text(title: str | None, text: str | None) -> str:
    """The one rule for a document's indexed text: title, a space, body."""
    title, text = (title or "").strip(), text or ""
    return f"{title} {text}" if title else text


def data_root() -> Path:
    """Where named collections live: $CLSR_DATA, else ../shared/data beside the source checkout."""
    if os.environ.get("CLSR_DATA"):
        return Path(os.environ["CLSR_DATA"])
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def resolve(source: str | os.PathLike) -> Path | str:
    """An existing path, a collection name under data_root(), or else an ir_datasets id (a str)."""
    path = Path(source)
    if path.exists():
        return path
    named = data_root() / str(source)
    if named.exists():
        return named
    if "/" in str(source) and not str(source).startswith((".", "/")):
        return str(source)
    raise DataError(
        f"no such file, folder or collection: {source!r} (looked in the working directory and in "
        f"CLSR_DATA={data_root()}); pass a BEIR folder, a .jsonl/.tsv file, or an ir_datasets id like beir/scifact/test"
    )


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; bad JSON names the file and line."""
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_number}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            yield line_number, record


def _read_tsv_pairs(path: Path) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            parts = line.split("\t", 1)
            if len(parts) != 2:
                raise DataError(f"{path}:{line_number}: expected 'id<TAB>text', got {line[:80]!r}")
            yield parts[0], parts[1]


def _record_id(path: Path, line_number: int, record: dict) -> str:
    for key in ("_id", "id", "docid"):
        if key in record and record[key] not in (None, ""):
            return str(record[key])
    raise DataError(f"{path}:{line_number}: record has no '_id' (keys: {', '.join(record) or 'none'})")


def record_document(path: Path, line_number: int, record: dict) -> Document:
    """A corpus JSONL record as a Document: BEIR ``{_id, title, text}`` or Pyserini ``{id, contents}``."""
    doc_id = _record_id(path, line_number, record)
    if "contents" in record:  # Pyserini JsonCollection
        return Document(doc_id, record["contents"] or "")
    return Document(doc_id, document_text(record.get("title"), record.get("text")))


def _jsonl_documents(path: Path) -> Iterator[Document]:
    for line_number, record in read_jsonl(path):
        yield record_document(path, line_number, record)


def _unique(documents: Iterable[Document], origin: str) -> Iterator[Document]:
    seen: set[str] = set()
    for doc in documents:
        if doc.id in seen:
            raise DataError(f"{origin}: duplicate document id {doc.id!r}")
        seen.add(doc.id)
        yield doc


def iter_corpus(source: str | os.PathLike) -> Iterator[Document]:
    """Stream a corpus. Duplicate ids are an error; empty texts are allowed."""
    where = resolve(source)
    if isinstance(where, str):
        return _unique((Document(d.doc_id, document_text(getattr(d, "title", ""), d.text))
                        for d in _ir_datasets(where).docs_iter()), where)
    if where.is_dir():
        where = where / "corpus.jsonl"
    if where.suffix == ".tsv":
        return _unique((Document(i, t) for i, t in _read_tsv_pairs(where)), str(where))
    return _unique(_jsonl_documents(where), str(where))


def load_corpus(source: str | os.PathLike) -> list[Document]:
    return list(iter_corpus(source))


def load_qrels(source: str | os.PathLike, split: str = "test") -> Qrels:
    """Qrels from a BEIR folder's ``qrels/<split>.tsv``, a BEIR/TREC qrels file, or ir_datasets."""
    where = resolve(source)
    if isinstance(where, str):
        qrels: Qrels = {}
        for q in _ir_datasets(where, split).qrels_iter():
            qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
        return qrels
    if where.is_dir():
        where = where / "qrels" / f"{split}.tsv"
        if not where.exists():
            available = sorted(p.stem for p in where.parent.glob("*.tsv"))
            raise DataError(f"no qrels for split {split!r} at {where}; available splits: {', '.join(available) or 'none'}")
    return _read_qrels_file(where)


def _read_qrels_file(path: Path) -> Qrels:
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or (line_number == 1 and fields[0] == "query-id"):
                continue
            if len(fields) == 3:  # BEIR: query-id corpus-id score
                qid, docid, grade = fields
            elif len(fields) == 4:  # TREC: qid iteration docid grade
                qid, _, docid, grade = fields
            else:
                raise DataError(f"{path}:{line_number}: expected 3 (BEIR) or 4 (TREC) qrels columns, got {len(fields)}")
            try:
                qrels.setdefault(qid, {})[docid] = int(grade)
            except ValueError:
                raise DataError(f"{path}:{line_number}: relevance grade {grade!r} is not an integer") from None
    return qrels


def load_topics(source: str | os.PathLike, split: str | None = "test") -> dict[str, str]:
    """Query id -> text, in file order.

    For a BEIR folder, only the queries judged in ``qrels/<split>.tsv`` are returned, and the log says
    which split was read; ``split=None`` returns every query. Judged ids with no query text are
    reported and left out.
    """
    where = resolve(source)
    if isinstance(where, str):
        dataset = _ir_datasets(where, split)
        topics = {q.query_id: q.text for q in dataset.queries_iter()}
        log.info("read %d queries from ir_datasets %r", len(topics), dataset.id)
        return topics
    queries_file = where / "queries.jsonl" if where.is_dir() else where
    if queries_file.suffix == ".tsv":
        queries = dict(_read_tsv_pairs(queries_file))
    else:
        queries = {}
        for line_number, record in read_jsonl(queries_file):
            queries[_record_id(queries_file, line_number, record)] = record.get("text", record.get("contents", "")) or ""
    if not where.is_dir() or split is None:
        return queries
    judged = load_qrels(where, split)
    missing = [qid for qid in judged if qid not in queries]
    if missing:
        log.warning("%d query ids in %s/qrels/%s.tsv have no text in %s and are left out: %s",
                    len(missing), where, split, queries_file, ", ".join(missing[:10]))
    topics = {qid: text for qid, text in queries.items() if qid in judged}
    log.info("read %d queries of split %r from %s", len(topics), split, where)
    return topics


def _ir_datasets(dataset_id: str, split: str | None = None):
    """`beir/scifact` with split `test` reads `beir/scifact/test` when ir_datasets has it."""
    try:
        import ir_datasets

        if split and f"{dataset_id}/{split}" in ir_datasets.registry:
            dataset_id = f"{dataset_id}/{split}"
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise DataError(f"{dataset_id!r} is neither a local path nor a known ir_datasets id") from None
    return _OfflineHint(dataset, dataset_id)


class _OfflineHint:
    """Wraps an ir_datasets dataset so that a failed download says what to do instead."""

    def __init__(self, dataset, dataset_id: str):
        self._dataset, self.id = dataset, dataset_id

    def __getattr__(self, name: str):
        method = getattr(self._dataset, name)

        def call(*args, **kwargs):
            try:
                yield from method(*args, **kwargs)
            except (OSError, ConnectionError) as e:  # requests' errors subclass OSError
                raise DataError(
                    f"could not fetch {self.id!r} through ir_datasets ({type(e).__name__}: {e}). "
                    "Offline, pass a local BEIR folder instead (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), "
                    f"e.g. a collection under CLSR_DATA={data_root()}"
                ) from e

        return call
