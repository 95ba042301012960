"""Corpora, topics and qrels as streams, from BEIR folders, files, or ir_datasets ids.

A *source* is one of:

* a BEIR-layout folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``);
* a name under ``$CLSR_DATA`` (default ``../shared/data`` beside a source checkout), e.g. ``scifact``;
* a file: ``.jsonl`` (BEIR ``{_id, title, text}`` or Pyserini ``{id, contents}``), ``.tsv``
  (MS MARCO ``id<TAB>text``), or TREC / BEIR qrels;
* an ``ir_datasets`` id such as ``beir/scifact/test`` (needs a network connection on first use).

Every file, of every kind, is read by one line reader (`text_lines`): gzip, bzip2 and xz files are
decompressed whatever their name (known by their first bytes), and a line ends at LF, CRLF or a bare CR.

A document's text is ``title + " " + text`` (the BEIR convention, as in Pyserini's "flat" indexes).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import logging
import lzma
import math
import os
import re
import shlex
import unicodedata
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

from clsr.errors import ClsrError

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


# Compressed files are known by their first bytes, not their names (a ".gz" may be plain text, and a
# download may have lost its suffix). bzip2: "BZh", a block size 1-9, then a block or end-of-stream magic.
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"),
          (b"\x04\x22\x4d\x18", "lz4"), (b"PK\x03\x04", "zip"), (b"7z\xbc\xaf\x27\x1c", "7z"))
_BZIP2 = re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4", ".zip", ".7z")
"""Name endings of compressed files: dropped to find a file's format (``queries.tsv.gz`` is TSV)."""
_READABLE = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}


def compression(path: str | os.PathLike) -> str | None:
    """The codec a file is compressed with, from its first bytes: gzip, bz2, xz, zstd, lz4, zip, 7z; None if
    it is not compressed. Raises DataError if the file does not exist."""
    try:
        with open(path, "rb") as f:
            head = f.read(10)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if _BZIP2.match(head):
        return "bz2"
    return next((codec for magic, codec in _MAGIC if head.startswith(magic)), None)


def open_binary(path: str | os.PathLike) -> IO[bytes]:
    """The file's bytes, decompressed if it is compressed (see `compression`).

    gzip, bz2 and xz come with Python; zstd needs the ``zstandard`` package. Another codec, or zstd
    without it, raises DataError naming the file and the codec.
    """
    codec = compression(path)
    if codec is None:
        return open(path, "rb")
    if codec in _READABLE:
        return _READABLE[codec](path, "rb")
    if codec == "zstd":
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: compressed with zstd, which needs the zstandard package (pip install "
                            f"zstandard); or decompress it first (zstd -d)") from None
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True, closefd=True)
        return io.BufferedReader(raw)
    raise DataError(f"{path}: compressed with {codec}, which clsr cannot read; decompress it first, or compress "
                    "it with gzip, bz2 or xz")


def format_suffix(path: str | os.PathLike) -> str:
    """A file's format suffix, under any compression suffix: ``.tsv`` for ``queries.tsv.gz``."""
    name = Path(path).name
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return Path(name[:-len(suffix)]).suffix
    return Path(name).suffix


def beir_file(folder: Path, name: str) -> Path:
    """``folder/name``, or its compressed form (``corpus.jsonl.gz``, ...) where only that exists.

    Raises DataError naming the folder and the file when neither is there.
    """
    for candidate in (name, *(name + suffix for suffix in COMPRESSED_SUFFIXES)):
        if (folder / candidate).is_file():
            return folder / candidate
    raise DataError(f"{folder} has no {name} (nor {name}.gz, .bz2, .xz or .zst); a BEIR folder holds corpus.jsonl, "
                    "queries.jsonl and qrels/<split>.tsv")


def qrels_splits(folder: Path) -> list[str]:
    """The qrels splits of a BEIR folder: ``qrels/<split>.tsv``, compressed or not."""
    names = (p.name for p in (folder / "qrels").glob("*.tsv*") if p.is_file())
    return sorted({name[:name.index(".tsv")] for name in names if format_suffix(name) == ".tsv"})


def text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its line end) for every line of a UTF-8 text file.

    The one reader of every input file. A compressed file (gzip, bz2, xz; see `open_binary`) is read
    decompressed. A line ends at LF, CRLF or a bare CR (old Mac and spreadsheet exports), as Python's
    universal newlines read text, so records are never merged. A byte-order mark is valid UTF-8 and is
    dropped. Bytes that are not UTF-8 raise DataError naming the file, line and column: clsr never
    guesses an encoding. Corrupt compressed data raises DataError naming the file and the line it broke off in.
    """
    codec = compression(path)
    stream = open_binary(path)
    line_number = 0
    try:
        with io.TextIOWrapper(stream, encoding="utf-8", newline=None) as text:
            for line_number, line in enumerate(text, 1):
                if line_number == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield line_number, line.rstrip("\n")
    except UnicodeDecodeError:
        _raise_decode_error(path, codec)
    except Exception as e:  # each codec has its own errors (BadGzipFile, EOFError, zlib.error, LZMAError, ...)
        if codec is None:
            raise
        raise DataError(f"{path}:{line_number + 1}: corrupt {codec} data ({type(e).__name__}: {e})") from None


def _raise_decode_error(path: str | os.PathLike, codec: str | None) -> None:
    """Read the file again, line by line as bytes, to name the line and column of the first byte that is not
    UTF-8 (the decoder that found it works on blocks of the file, not lines)."""
    with io.TextIOWrapper(open_binary(path), encoding="latin-1", newline=None) as text:  # latin-1: bytes as-is
        for line_number, line in enumerate(text, 1):
            raw = line.encode("latin-1")
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                where = f"{path}:{line_number}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                if codec is not None:  # advice for the file's text, not its compressed bytes
                    raise DataError(f"{where} in the {codec}-decompressed text; decompress it, convert the text to "
                                    "UTF-8 and compress it again") from None
                raise DataError(f"{where}; convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    raise DataError(f"{path}: not UTF-8")


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
    """(line number, object) for each non-blank line of a JSON Lines file.

    Raises DataError naming the file and line for a line that is not one JSON object: bad JSON, or a
    whole JSON document in the file's place (one array, or an object spread over several lines), which
    `json_record` names as such, with how to convert it.
    """
    first = True
    for line_number, line in text_lines(path):
        if not line.strip():
            continue
        yield line_number, json_record(line, f"{path}:{line_number}", first, path)
        first = False


def json_record(line: str, where: str, first: bool = False, path: str | os.PathLike | None = None) -> dict:
    """One line of a JSON Lines file as its object: the one rule for every reader of JSONL input.

    `where` names the file and line for errors; `first` says whether this is the file's first non-blank
    line, where a file holding one JSON document instead of JSON Lines shows (the ``[`` of an array);
    `path` (the file) goes into the conversion command the error suggests.
    Raises DataError: for a JSON array (``json.dump(list)``, on one line or over many) or an object spread
    over several lines (pretty-printed), it says so, that JSON Lines (one object a line) is expected and
    how to convert the file; otherwise it names the JSON error and column, or the kind of value that is
    not an object.
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        start, ends_inside = line.lstrip()[:1], e.pos >= len(line.rstrip())
        if start == "[" and first:
            raise DataError(f"{where}: the file is one JSON array ([...]), not JSON Lines: {_JSONL_EXPECTED}; "
                            f"convert it with {_conversion(path, '.[]')}") from None
        if start == "{" and ends_inside:  # the line ends before its object does
            raise DataError(f"{where}: malformed JSON: the line ends inside a JSON object (an object spread over "
                            f"several lines, as pretty-printed JSON is, or a line cut short); {_JSONL_EXPECTED}; to "
                            f"convert pretty-printed JSON: {_conversion(path, '.')}") from None
        raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno}); {_JSONL_EXPECTED}") from None
    if isinstance(record, dict):
        return record
    if isinstance(record, list) and first:
        raise DataError(f"{where}: the file is one JSON array ([...]) on one line, not JSON Lines: {_JSONL_EXPECTED}; "
                        f"convert it with {_conversion(path, '.[]')}")
    kind = "a JSON string" if isinstance(record, str) else "JSON null" if record is None else "a JSON " + (
        "array" if isinstance(record, list) else "boolean" if isinstance(record, bool) else "number")
    raise DataError(f"{where}: expected a JSON object, got {kind}; {_JSONL_EXPECTED}")


_JSONL_EXPECTED = 'clsr reads JSON Lines, one JSON object a line, e.g. {"_id": "d1", "title": "...", "text": "..."}'


def _conversion(path: str | os.PathLike | None, jq_filter: str) -> str:
    """The jq command that writes `path`'s JSON document as JSON Lines, to a new file beside it."""
    if path is None:
        return f"jq -c '{jq_filter}' FILE > FILE.jsonl"
    source = Path(path)
    target = source.with_suffix(".jsonl") if source.suffix != ".jsonl" else source.with_name(
        f"{source.stem}-lines.jsonl")  # never the file itself: the shell would empty it before jq reads it
    return f"jq -c '{jq_filter}' {shlex.quote(str(source))} > {shlex.quote(str(target))}"


def _read_tsv_pairs(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, id, text) of an ``id<TAB>text`` file, split on the first tab only."""
    for line_number, line in text_lines(path):
        if not line.strip():
            continue
        key, tab, text = line.partition("\t")
        if not tab:
            raise DataError(f"{path}:{line_number}: expected 'id<TAB>text', got {line[:80]!r}")
        yield line_number, key, text


ID_KEYS = ("_id", "id", "docid")
"""The fields a JSONL record's id is read from, the first present: BEIR ``_id``, Pyserini ``id``, ``docid``."""


def record_id(record: dict, what: str, where: str) -> str:
    """The id of a JSONL record (see ID_KEYS) as text that every run and qrels file can hold.

    A JSON string is the id as written; an integer (``31715818``) is its decimal text. A float
    (``31715818.0``, ``1e3``, as pandas writes an integer column that has a gap), a boolean or null
    would become text that no qrels line holds, so it raises DataError naming ``where`` (file:line):
    write ids as strings. So does a missing id, or one `check_id` refuses.
    """
    key = next((k for k in ID_KEYS if k in record), None)
    if key is None:
        raise DataError(f"{where}: record has no '_id' (keys: {', '.join(record) or 'none'})")
    value = record[key]
    if isinstance(value, str):
        return check_id(value, what, where)
    if isinstance(value, int) and not isinstance(value, bool):
        return check_id(str(value), what, where)
    kind = ("a JSON boolean" if isinstance(value, bool) else "JSON null" if value is None
            else "a JSON float" if isinstance(value, float) else "a JSON array" if isinstance(value, list)
            else "a JSON object")
    raise DataError(f"{where}: {what} id {json.dumps(value)} is {kind}, which would never match the qrels as "
                    f"written; write ids as strings (e.g. \"{key}\": \"31715818\")")


def field_text(value: object, what: str, where: str) -> tuple[str, bool]:
    """(text, unusual) of a JSON text field (title, text, contents): the one rule for every reader.

    A string is itself and null is empty, as before. NaN (what pandas writes for a missing value) is
    empty too, and a finite number is its text (a title ``2019`` reads "2019"); both are ``unusual``,
    for the reader's warning. Anything else (true/false, Infinity, a list, an object) raises DataError
    naming ``where`` (file, line and record id).
    """
    if isinstance(value, str):
        return value, False
    if value is None:
        return "", False
    if isinstance(value, float) and math.isnan(value):
        return "", True
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value), True
    raise DataError(f"{where}: {what} is {json.dumps(value)[:40]}, not a string; write text fields as strings")


class _Located(NamedTuple):
    line_number: int
    id: str
    text: str
    unusual: bool = False  # a text field was NaN or a number (see field_text)


def _located(path: Path, line_number: int, record: dict) -> _Located:
    doc_id = record_id(record, "document", f"{path}:{line_number}")

    def field(name: str) -> tuple[str, bool]:
        return field_text(record.get(name), name, f"{path}:{line_number}: document {doc_id!r}")

    if "contents" in record:  # Pyserini JsonCollection
        contents, unusual = field("contents")
        return _Located(line_number, doc_id, contents, unusual)
    if "text" in record or "title" in record:
        (title, odd_title), (text, odd_text) = field("title"), field("text")
        return _Located(line_number, doc_id, document_text(title, text), odd_title or odd_text)
    raise DataError(f"{path}:{line_number}: document {doc_id!r} has no text: expected 'text' and 'title' "
                    f"(BEIR) or 'contents' (Pyserini); keys: {', '.join(record)}")


def record_document(path: Path, line_number: int, record: dict) -> Document:
    """A corpus JSONL record as a Document, its id and text read as `iter_corpus` reads them: BEIR ``{_id, title,
    text}`` or Pyserini ``{id, contents}`` (for readers that parse lines elsewhere, e.g. Ray's workers)."""
    located = _located(path, line_number, record)
    return Document(located.id, clean_text(located.text)[0])


def _jsonl_documents(path: Path) -> Iterator[_Located]:
    for line_number, record in read_jsonl(path):
        yield _located(path, line_number, record)


def _checked_documents(located: Iterable[_Located], origin: str) -> Iterator[Document]:
    """Documents with unique ids (a repeat names both lines), cleaned text, and at least one of them."""
    first_line: dict[str, int] = {}
    cleaned_lines = []
    unusual: list[tuple[int, str]] = []
    for line_number, doc_id, text, odd in located:
        if doc_id in first_line:
            raise DataError(f"{origin}:{line_number}: duplicate document id {doc_id!r} (first at line "
                            f"{first_line[doc_id]})")
        first_line[doc_id] = line_number
        text, changed = clean_text(text)
        if changed:
            cleaned_lines.append(line_number)
        if odd:
            unusual.append((line_number, doc_id))
        yield Document(doc_id, text)
    if not first_line:
        raise DataError(f"{origin}: no documents")
    if cleaned_lines:
        log.warning("%s: %d passages hold lone surrogate escapes (invalid Unicode), replaced by U+FFFD; first at "
                    "line %d", origin, len(cleaned_lines), cleaned_lines[0])
    if unusual:
        log.warning("%s: %d passages have a title or text that is NaN (read as empty) or a number (read as its "
                    "text); first at line %d (document %r)", origin, len(unusual), *unusual[0])


def iter_corpus(source: str | os.PathLike) -> Iterator[Document]:
    """Stream a corpus: ``Document(id, title + " " + text)``.

    Raises DataError (file and line) for a repeated id (naming both lines), an id a run file cannot
    hold or that is not a JSON string or integer (`record_id`), a record without text fields, bytes that
    are not UTF-8, or an empty corpus. Empty texts are allowed; a NaN or numeric title or text follows
    `field_text`; lone surrogate escapes are replaced by U+FFFD; both are counted in a warning.
    """
    where = resolve(source)
    if isinstance(where, str):
        return _checked_documents((_Located(n, check_id(d.doc_id, "document", f"{where} document {n}"),
                                            document_text(getattr(d, "title", ""), d.text))
                                   for n, d in enumerate(_ir_datasets(where).docs_iter(), 1)), where)
    if where.is_dir():
        where = beir_file(where, "corpus.jsonl")
    if format_suffix(where) == ".tsv":
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
        folder = where
        try:
            where = beir_file(folder / "qrels", f"{split}.tsv")
        except DataError:
            raise DataError(f"no qrels for split {split!r} at {folder / 'qrels' / f'{split}.tsv'}; available splits: "
                            f"{', '.join(qrels_splits(folder)) or 'none'}") from None
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
    cannot hold or that is not a JSON string or integer (`record_id`), or a JSONL record without a
    ``text`` field. A NaN or numeric text follows `field_text`, as in a corpus. Blank queries
    (NaN ones included) are kept (they get no hits) and reported by id.
    """
    unusual: list[tuple[int, str]] = []
    if format_suffix(path) == ".tsv":
        located = ((n, check_id(i, "query", f"{path}:{n}"), t) for n, i, t in _read_tsv_pairs(path))
    else:
        located = _jsonl_queries(path, unusual)
    topics: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line_number, qid, text in located:
        if qid in first_line:
            raise DataError(f"{path}:{line_number}: duplicate query id {qid!r} (first at line {first_line[qid]})")
        first_line[qid] = line_number
        topics[qid] = clean_text(text)[0]
    if unusual:
        log.warning("%s: %d queries have a text that is NaN (read as empty) or a number (read as its text); first "
                    "at line %d (query %r)", path, len(unusual), *unusual[0])
    blank = [qid for qid, text in topics.items() if not text.strip()]
    if blank:
        log.warning("%s: %d blank queries get no hits: %s", path, len(blank), ", ".join(blank[:20]))
    return topics


def _jsonl_queries(path: Path, unusual: list[tuple[int, str]]) -> Iterator[tuple[int, str, str]]:
    """(line number, id, text) of BEIR JSONL queries; lines whose text follows field_text's NaN/number rule are
    added to `unusual`. A file whose first record fails is checked for Pyserini's JSON topics, to say so."""
    read = 0
    try:
        for line_number, record in read_jsonl(path):
            yield _jsonl_query(path, line_number, record, unusual)
            read += 1
    except DataError:
        if read == 0:
            _refuse_pyserini_topics(path)
        raise


def _jsonl_query(path: Path, line_number: int, record: dict, unusual: list[tuple[int, str]]) -> tuple[int, str, str]:
    qid = record_id(record, "query", f"{path}:{line_number}")
    if "text" not in record:
        raise DataError(f"{path}:{line_number}: query record has no 'text' field (keys: {', '.join(record)}); "
                        "BEIR queries are {\"_id\": ..., \"text\": ...}")
    text, odd = field_text(record["text"], "text", f"{path}:{line_number}: query {qid!r}")
    if odd:
        unusual.append((line_number, qid))
    return line_number, qid, text


def _refuse_pyserini_topics(path: Path) -> None:
    """Raise DataError if `path` holds Pyserini's JSON topics (``{qid: {"title": text}}``, what
    ``clsr encode-queries --topics-output t.json`` writes for Pyserini), saying how to pass them to clsr;
    otherwise return. Only a small file is parsed whole (this runs once its first line failed as JSONL)."""
    if os.path.getsize(path) > 64 << 20:
        return
    try:
        topics = json.loads("\n".join(line for _, line in text_lines(path)))
    except (DataError, json.JSONDecodeError):
        return
    if isinstance(topics, dict) and topics and all(isinstance(v, dict) and "title" in v for v in topics.values()):
        raise DataError(f"{path}: Pyserini's JSON topics ({{qid: {{\"title\": ...}}}}), which clsr writes for "
                        "Pyserini but does not read: pass queries as JSON Lines ({\"_id\": ..., \"text\": ...} a "
                        f"line) or id<TAB>text; convert with jq -r 'to_entries[] | \"\\(.key)\\t\\(.value.title)\"' "
                        f"{shlex.quote(str(path))} > {shlex.quote(str(path.with_suffix('.tsv')))}")


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
    queries_file = beir_file(where, "queries.jsonl") if where.is_dir() else where
    queries = read_topics_file(queries_file)
    if not where.is_dir() or split is None:
        return queries
    judged = load_qrels(where, split)
    missing = [qid for qid in judged if qid not in queries]
    if missing:
        log.warning("%d query ids in %s/qrels/%s.tsv have no text in %s and are left out: %s",
                    len(missing), where, split, queries_file, ", ".join(missing[:10]))
        warn_normalisation_matches("query", missing, queries, f"{where}/qrels/{split}.tsv", str(queries_file))
    topics = {qid: text for qid, text in queries.items() if qid in judged}
    log.info("read %d queries of split %r from %s", len(topics), split, where)
    return topics


def normalisation_matches(wanted: Iterable[str], present: Collection[str]) -> dict[str, str]:
    """{id: id in `present`} for each id of `wanted` that is not in `present` as written but equals one of them
    after Unicode normalisation (NFKC, which also joins NFC and NFD forms: ``café`` written with U+00E9 or
    with e + U+0301). Ids are compared as written everywhere, as trec_eval compares them; this only finds
    what to warn about. ASCII ids are their own normal form, so only the others are normalised.
    """
    present = present if isinstance(present, (set, frozenset, dict)) else set(present)
    wanted = [name for name in wanted if name not in present]
    by_form: dict[str, str] = {}
    for other in present:
        if not other.isascii():
            by_form.setdefault(unicodedata.normalize("NFKC", other), other)
    if not by_form and all(name.isascii() for name in wanted):
        return {}
    matches = {}
    for name in wanted:
        form = name if name.isascii() else unicodedata.normalize("NFKC", name)
        match = by_form.get(form) or (form if form in present else None)
        if match is not None:
            matches[name] = match
    return matches


def _form(text: str) -> str:
    return next((form for form in ("NFC", "NFD", "NFKC", "NFKD") if unicodedata.is_normalized(form, text)), "mixed")


_warned_pairs: set[tuple[str, str]] = set()


def warn_normalisation_matches(what: str, wanted: Iterable[str], present: Collection[str], wanted_in: str,
                               present_in: str) -> dict[str, str]:
    """Log a warning naming the `what` ids (query, document) of `wanted_in` that match ids of `present_in` only
    after Unicode normalisation (see `normalisation_matches`), each pair once per process; returns the
    matches. Such ids never match, as in trec_eval: the warning says so instead of a silent zero."""
    matches = normalisation_matches(wanted, present)
    new = {name: other for name, other in matches.items() if (name, other) not in _warned_pairs}
    if new:
        _warned_pairs.update(new.items())
        examples = ", ".join(f"{ascii(name)} ({_form(name)}) ~ {ascii(other)} ({_form(other)})"
                             for name, other in list(new.items())[:3])
        log.warning("%s: %d %s ids match ids of %s only after Unicode normalisation, so they never match (ids are "
                    "compared as written, as trec_eval does): %s; write both in one form (e.g. NFC)", wanted_in,
                    len(new), what, present_in, examples)
    return matches


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
