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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

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


def text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its line end) for every line of a UTF-8 text file.

    A byte-order mark is valid UTF-8 and is dropped. Bytes that are not UTF-8 raise DataError naming
    the file, line and column: clsr never guesses an encoding.
    """
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{line_number}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8") from None
            if line_number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield line_number, line.rstrip("\n").rstrip("\r")


def check_id(value: str, what: str, where: str) -> str:
    """An id that every format clsr writes can hold: non-empty, no whitespace (TREC runs are split on it),
    no lone surrogate (not encodable as UTF-8). Raises DataError naming ``where`` (file:line)."""
    if not value:
        raise DataError(f"{where}: empty {what} id")
    if _UNWRITABLE.search(value) is None:  # the common case, in one scan
        return value
    if any(c.isspace() for c in value):
        raise DataError(f"{where}: {what} id {value!r} contains whitespace, which a TREC run (split on whitespace) "
                        "cannot hold; rename it")
    if _SURROGATE.search(value):
        raise DataError(f"{where}: {what} id {value!r} holds a lone surrogate escape, which UTF-8 cannot encode")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")
_UNWRITABLE = re.compile("[\\s\ud800-\udfff]")


def clean_text(text: str) -> tuple[str, bool]:
    """(text, changed): a lone UTF-16 surrogate (a JSON escape like \\ud83d without its pair) becomes U+FFFD,
    as a UTF-8 encoder with errors="replace" would do, so every index kind reads the same text."""
    cleaned = _SURROGATE.sub("\ufffd", text)
    return cleaned, cleaned != text


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; bad JSON names the file and line."""
    for line_number, line in text_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line_number}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
        yield line_number, record


def _read_tsv_pairs(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, id, text) of an ``id<TAB>text`` file, split on the first tab only."""
    for line_number, line in text_lines(path):
        if not line.strip():
            continue
        key, tab, text = line.partition("\t")
        if not tab:
            raise DataError(f"{path}:{line_number}: expected 'id<TAB>text', got {line[:80]!r}")
        yield line_number, key, text


def _record_id(path: Path, line_number: int, record: dict, what: str) -> str:
    for key in ("_id", "id", "docid"):
        if key in record and record[key] not in (None, ""):
            return check_id(str(record[key]), what, f"{path}:{line_number}")
    raise DataError(f"{path}:{line_number}: record has no '_id' (keys: {', '.join(record) or 'none'})")


class _Located(NamedTuple):
    line_number: int
    id: str
    text: str


def _jsonl_documents(path: Path) -> Iterator[_Located]:
    for line_number, record in read_jsonl(path):
        doc_id = _record_id(path, line_number, record, "document")
        if "contents" in record:  # Pyserini JsonCollection
            yield _Located(line_number, doc_id, record["contents"] or "")
        elif "text" in record or "title" in record:
            yield _Located(line_number, doc_id, document_text(record.get("title"), record.get("text")))
        else:
            raise DataError(f"{path}:{line_number}: document {doc_id!r} has no text: expected 'text' and 'title' "
                            f"(BEIR) or 'contents' (Pyserini); keys: {', '.join(record)}")


def _checked_documents(located: Iterable[_Located], origin: str) -> Iterator[Document]:
    """Documents with unique ids (a repeat names both lines), cleaned text, and at least one of them."""
    first_line: dict[str, int] = {}
    cleaned_lines = []
    for line_number, doc_id, text in located:
        if doc_id in first_line:
            raise DataError(f"{origin}:{line_number}: duplicate document id {doc_id!r} (first at line "
                            f"{first_line[doc_id]})")
        first_line[doc_id] = line_number
        text, changed = clean_text(text)
        if changed:
            cleaned_lines.append(line_number)
        yield Document(doc_id, text)
    if not first_line:
        raise DataError(f"{origin}: no documents")
    if cleaned_lines:
        log.warning("%s: %d passages hold lone surrogate escapes (invalid Unicode), replaced by U+FFFD; first at "
                    "line %d", origin, len(cleaned_lines), cleaned_lines[0])


def iter_corpus(source: str | os.PathLike) -> Iterator[Document]:
    """Stream a corpus: ``Document(id, title + " " + text)``.

    Raises DataError (file and line) for a repeated id (naming both lines), an id a run file cannot
    hold, a record without text fields, bytes that are not UTF-8, or an empty corpus. Empty texts are
    allowed; lone surrogate escapes are replaced by U+FFFD and counted in a warning.
    """
    where = resolve(source)
    if isinstance(where, str):
        return _checked_documents((_Located(n, check_id(d.doc_id, "document", f"{where} document {n}"),
                                            document_text(getattr(d, "title", ""), d.text))
                                   for n, d in enumerate(_ir_datasets(where).docs_iter(), 1)), where)
    if where.is_dir():
        where = where / "corpus.jsonl"
    if where.suffix == ".tsv":
        return _checked_documents((_Located(n, check_id(i, "document", f"{where}:{n}"), t)
                                   for n, i, t in _read_tsv_pairs(where)), str(where))
    return _checked_documents(_jsonl_documents(where), str(where))


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
    """BEIR (``query-id<TAB>corpus-id<TAB>score``, header optional) or TREC (``qid iter docid grade``) qrels.

    A line whose tabs make the three BEIR columns is split on tabs only (ids may hold spaces there);
    any other on whitespace, as trec_eval reads qrels. A pair judged twice with different grades raises
    DataError naming both lines; identical repeats pass.
    """
    qrels: Qrels = {}
    judged_at: dict[tuple[str, str], int] = {}
    for line_number, line in text_lines(path):
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 3:
            fields = line.split()
        if not fields or fields == [""] or (not judged_at and fields[0] == "query-id"):
            continue
        if len(fields) == 3:  # BEIR: query-id corpus-id score
            qid, docid, grade = fields
        elif len(fields) == 4:  # TREC: qid iteration docid grade
            qid, _, docid, grade = fields
        else:
            raise DataError(f"{path}:{line_number}: expected 3 (BEIR) or 4 (TREC) qrels columns, got {len(fields)}")
        try:
            value = int(grade)
        except ValueError:
            raise DataError(f"{path}:{line_number}: relevance grade {grade!r} is not an integer") from None
        earlier = qrels.get(qid, {}).get(docid)
        if earlier is not None and earlier != value:
            raise DataError(f"{path}:{line_number}: query {qid!r}, document {docid!r} judged {value} here and "
                            f"{earlier} at line {judged_at[qid, docid]}")
        judged_at.setdefault((qid, docid), line_number)
        qrels.setdefault(qid, {})[docid] = value
    return qrels


def read_topics_file(path: Path) -> dict[str, str]:
    """Query id -> text from ``id<TAB>text`` (.tsv) or JSONL with ``_id``/``id`` and ``text``.

    Raises DataError naming the file and line for a repeated id (and its first line), an id a run
    cannot hold, or a JSONL record without a ``text`` field. Blank queries are kept (they get no
    hits) and reported by id.
    """
    if path.suffix == ".tsv":
        located = ((n, check_id(i, "query", f"{path}:{n}"), t) for n, i, t in _read_tsv_pairs(path))
    else:
        located = ((n, _record_id(path, n, record, "query"), _query_text(path, n, record))
                   for n, record in read_jsonl(path))
    topics: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line_number, qid, text in located:
        if qid in first_line:
            raise DataError(f"{path}:{line_number}: duplicate query id {qid!r} (first at line {first_line[qid]})")
        first_line[qid] = line_number
        topics[qid] = clean_text(text)[0]
    blank = [qid for qid, text in topics.items() if not text.strip()]
    if blank:
        log.warning("%s: %d blank queries get no hits: %s", path, len(blank), ", ".join(blank[:20]))
    return topics


def _query_text(path: Path, line_number: int, record: dict) -> str:
    if "text" not in record:
        raise DataError(f"{path}:{line_number}: query record has no 'text' field (keys: {', '.join(record)}); "
                        "BEIR queries are {\"_id\": ..., \"text\": ...}")
    text = record["text"]
    if text is not None and not isinstance(text, str):
        raise DataError(f"{path}:{line_number}: query text is a {type(text).__name__}, not a string")
    return text or ""


def load_topics(source: str | os.PathLike, split: str | None = "test") -> dict[str, str]:
    """Query id -> text, in file order (see `read_topics_file` for what is refused).

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
    queries = read_topics_file(queries_file)
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
