"""The index manifest, ``clsr-index.json``: one typed, versioned record, read and written only here.

Every index directory holds one. It says what kind of index it is (``bm25``, ``dense`` or
``concepts``), what built it and from what; searchers read it to know how to search, and to refuse
an index that does not match. Fields that only some kinds have are ``None`` on the others.

Manifests written before ``format_version`` existed (clsr 0.1) are version 1; fields added later
(``encoding``, ``sae_fit``, the SAE's ``adapted_from``, ``hybrid_alpha``) are ``None`` when absent.
Unknown fields and missing required ones are refused with a one-line :class:`InvalidIndexError`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from clsr import __version__
from clsr.errors import InvalidIndexError

MANIFEST_NAME = "clsr-index.json"
FORMAT_VERSION = 1  # raise when a field changes meaning; adding an optional field keeps it
INDEX_KINDS = ("bm25", "dense", "concepts")


def _from_mapping(cls, data: object, where: str, field: str):
    """``cls`` built from ``data``'s keys: unknown and missing required keys are refused, naming ``where``."""
    if not isinstance(data, Mapping):
        raise InvalidIndexError(f"{where}: {field} is {type(data).__name__}, not an object")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InvalidIndexError(f"{where}: unknown field {_path(field, unknown[0])} (written by a newer clsr?)")
    missing = [name for name, f in known.items() if name not in data and _required(f)]
    if missing:
        raise InvalidIndexError(f"{where}: missing field {_path(field, missing[0])}")
    return cls(**data)


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


@dataclass(frozen=True)
class SaeRecord:
    """The SAE a concept index was built with.

    ``name`` is its folder's name and ``path`` its folder (relative to the index when the SAE is kept
    inside it, ``sae``); ``sha256`` is :func:`clsr.sae.model.sae_checksum` of it, which searches check.
    ``n_latents``, ``k`` and ``d_in`` are its shape; ``adapted_from`` is the base SAE an adapted one
    came from (``{"name", "path", "sha256", "data"}``; ``None`` for an SAE that was not adapted, or
    an index built before adaptation existed). ``source`` is the sentence-transformers CSR model the SAE was
    converted from (``{"format": "sentence-transformers", "path", "sha256"}``, the sha256 over the folder's files:
    :func:`clsr.sae.sentence_transformers.folder_checksum`); absent from the file when ``None``, so manifests of
    clsr SAEs keep the shape they always had.
    """

    name: str
    path: str
    sha256: str
    n_latents: int
    k: int
    d_in: int
    adapted_from: dict | None = None
    source: dict | None = None

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        if values["source"] is None:
            del values["source"]
        return values


@dataclass(frozen=True)
class SaeFit:
    """How well the SAE reconstructs the indexed corpus (:func:`clsr.index.check_sae_fit`).

    ``fvu`` on a ``sample`` of the corpus's embeddings, against ``reference_fvu``, the SAE's FVU on its
    own training passages (``None`` when its config records none); ``poor_fit`` when far worse.
    """

    fvu: float
    reference_fvu: float | None
    sample: int
    poor_fit: bool


@dataclass(frozen=True)
class QueryDefaults:
    """A concept index's query-side defaults: ``k`` concepts per query, in ``mode`` (``topk`` ...), with
    ``quantizer`` (:meth:`clsr.index.concepts.Quantizer.to_dict`; its scale is ``None``: fitted per query).
    An index with words (``words`` in the manifest) also records the mix: ``words_weight`` W and the
    ``normalization`` rule that puts both parts on one scale (`clsr.index.mix`); absent from the file when
    ``None``, so manifests of concept-only indexes keep the shape they always had."""

    k: int
    mode: str
    quantizer: dict
    words_weight: float | None = None
    normalization: str | None = None

    def to_dict(self) -> dict:
        return {name: value for name, value in dataclasses.asdict(self).items()
                if value is not None or name in ("k", "mode", "quantizer")}


@dataclass(frozen=True)
class WordsRecord:
    """The words a concept index holds beside its concepts (`clsr.index.words`): each passage's analysed words
    with BM25 weights (``k1``, ``b``, over ``documents`` passages of mean analysed length ``avgdl``), quantised
    by ``quantizer`` (:meth:`clsr.index.concepts.Quantizer.to_dict`); ``vocabulary`` distinct words,
    ``postings`` (word, passage) pairs, by ``analyzer``; ``bytes`` of ``doc_words/`` on disk."""

    documents: int
    avgdl: float
    k1: float
    b: float
    quantizer: dict
    vocabulary: int
    postings: int
    analyzer: str
    bytes: int = 0


@dataclass(frozen=True)
class HybridAlpha:
    """The hybrid's tuned alpha: the best ``alpha`` by ``metric`` over ``curve`` ({"0.3": value, ...}),
    tuned on what ``tuned_on`` says (pseudo-queries at build time, or a train/dev split)."""

    alpha: float
    metric: str
    tuned_on: str
    curve: dict[str, float]


@dataclass(frozen=True)
class IndexManifest:
    """What ``clsr-index.json`` records of an index.

    Every kind: ``kind`` (one of :data:`INDEX_KINDS`), ``documents`` (how many), ``clsr_version`` and
    ``created`` (ISO 8601, UTC, seconds) of the build, ``source`` (the corpus's path or dataset name; ""
    when unknown) and ``format_version``.

    ``bm25``: ``k1``, ``b`` and ``build_seconds``. ``dense``: ``dim`` and ``encoder``.
    ``dense`` and ``concepts``: ``encoder`` (:meth:`clsr.encode.dense.EncoderConfig.to_dict`) and ``encoding``
    (``{"backend", "dtype"}``; ``None``: built before backends, so torch).
    ``concepts``: ``sae``, ``sae_fit``, ``doc_k`` (concepts per document), ``doc_quantizer``
    (:meth:`clsr.index.concepts.Quantizer.to_dict`), ``query``, ``postings``, ``empty_documents`` (documents
    with no concept above zero), ``lucene_bytes`` and ``doc_codes_bytes`` (on disk), ``timings``
    (seconds per build stage) and ``hybrid_alpha`` (``None`` until tuned).
    """

    kind: str
    clsr_version: str
    documents: int
    created: str
    source: str = ""
    format_version: int = FORMAT_VERSION
    # bm25
    k1: float | None = None
    b: float | None = None
    build_seconds: float | None = None
    # dense and concepts
    dim: int | None = None
    encoder: dict | None = None
    encoding: dict | None = None
    # concepts
    sae: SaeRecord | None = None
    sae_fit: SaeFit | None = None
    doc_k: int | None = None
    doc_quantizer: dict | None = None
    query: QueryDefaults | None = None
    postings: int | None = None
    empty_documents: int | None = None
    lucene_bytes: int | None = None
    doc_codes_bytes: int | None = None
    timings: dict[str, float] | None = None
    hybrid_alpha: HybridAlpha | None = None
    words: WordsRecord | None = None  # concepts: the words beside them (None: a concept-only index)

    # Fields each kind's searchers need; checked on reading so a damaged manifest fails here, by name.
    REQUIRED: ClassVar[dict[str, tuple[str, ...]]] = {
        "bm25": (),
        "dense": ("encoder",),
        "concepts": ("encoder", "sae", "doc_k", "doc_quantizer", "query"),
    }
    # Fields written by every version of each kind's build: absent, they are not written back either,
    # so a manifest of another kind keeps the shape it always had.
    WRITTEN: ClassVar[dict[str, tuple[str, ...]]] = {
        "bm25": ("k1", "b", "build_seconds"),
        "dense": ("dim", "encoder", "encoding"),
        "concepts": ("encoder", "encoding", "sae", "sae_fit", "doc_k", "doc_quantizer", "query", "postings",
                     "empty_documents", "lucene_bytes", "doc_codes_bytes", "timings"),
    }
    RECORDS: ClassVar[dict[str, type]] = {"sae": SaeRecord, "sae_fit": SaeFit, "query": QueryDefaults,
                                          "hybrid_alpha": HybridAlpha, "words": WordsRecord}

    @classmethod
    def create(cls, kind: str, documents: int, **fields: Any) -> IndexManifest:
        """A new build's manifest: this clsr's version and the time now, with ``fields`` as given."""
        return cls(kind=kind, documents=documents, clsr_version=__version__,
                   created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **fields)

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise InvalidIndexError(f"unknown index kind {self.kind!r} (expected one of {', '.join(INDEX_KINDS)})")

    @classmethod
    def from_dict(cls, data: object, where: str = "the manifest") -> IndexManifest:
        """The manifest ``data`` (parsed JSON) holds; ``where`` names it in errors (a file, a collection).

        Raises InvalidIndexError, one line naming ``where`` and the field, for an unknown field, a missing
        required one, an unknown kind, or a ``format_version`` newer than this clsr reads.
        """
        if not isinstance(data, Mapping):
            raise InvalidIndexError(f"{where}: the manifest is {type(data).__name__}, not an object")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InvalidIndexError(f"{where}: format_version {version!r} is newer than this clsr reads "
                                    f"({FORMAT_VERSION}); upgrade clsr")
        kind = data.get("kind")
        if kind not in INDEX_KINDS:
            raise InvalidIndexError(f"{where}: unknown index kind {kind!r} (expected one of {', '.join(INDEX_KINDS)})")
        missing = [name for name in cls.REQUIRED[kind] if data.get(name) is None]
        if missing:
            raise InvalidIndexError(f"{where}: missing field {missing[0]} (a {kind} index needs it)")
        records = {name: _from_mapping(record, data[name], where, name)
                   for name, record in cls.RECORDS.items() if data.get(name) is not None}
        return _from_mapping(cls, {**data, **records}, where, "")

    def to_dict(self) -> dict:
        """The JSON object written to ``clsr-index.json``: every field this kind's builds write, in the order
        clsr 0.1 wrote them, plus ``hybrid_alpha`` once tuned and ``format_version``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        names = ["kind", "clsr_version", "documents", "created", "source", *self.WRITTEN[self.kind],
                 *(["words"] if self.words is not None else []),
                 *(["hybrid_alpha"] if self.hybrid_alpha is not None else []), "format_version"]
        return {name: (values[name].to_dict() if hasattr(values[name], "to_dict") else dataclasses.asdict(values[name]))
                if dataclasses.is_dataclass(values[name]) else values[name] for name in names}

    @classmethod
    def read(cls, directory: str | os.PathLike) -> IndexManifest:
        """The manifest of the index at ``directory``.

        Raises InvalidIndexError when there is none (not an index), when it is not JSON, or as
        :meth:`from_dict` does, naming the file.
        """
        path = Path(directory) / MANIFEST_NAME
        if not path.exists():
            raise InvalidIndexError(f"{directory} is not a clsr index (no {MANIFEST_NAME}); "
                                    "build one with `clsr index`")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise InvalidIndexError(f"{path}: not JSON ({e})") from None
        return cls.from_dict(data, where=str(path))

    def write(self, directory: str | os.PathLike) -> IndexManifest:
        """Write this manifest as ``directory``'s ``clsr-index.json``, atomically (a temporary file renamed over
        it), so a reader sees the old manifest or the new one, never half of one. Returns itself."""
        path = Path(directory) / MANIFEST_NAME
        fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.to_dict(), indent=2) + "\n")
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the manifest private to its writer
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self

    def identity(self) -> str:
        """A key of the build this manifest records (20 hex digits): the same for every copy of one index, another
        for a rebuilt one, and unchanged by what is recorded later (``hybrid_alpha``). What is derived from an
        index outside its folder is kept under it (`clsr.index.derived`)."""
        import hashlib

        built = {name: value for name, value in self.to_dict().items() if name != "hybrid_alpha"}
        return hashlib.sha256(json.dumps(built, sort_keys=True).encode()).hexdigest()[:20]

    def replace(self, **changes: Any) -> IndexManifest:
        """A copy with ``changes`` (e.g. ``hybrid_alpha=HybridAlpha(...)``); :meth:`write` it to record them."""
        return dataclasses.replace(self, **changes)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_manifest(directory: str | os.PathLike, kind: str, documents: int, **fields: Any) -> IndexManifest:
    """Write a new build's manifest (:meth:`IndexManifest.create`, with ``fields`` as parsed JSON would give them)
    into ``directory`` and return it. Raises InvalidIndexError for an unknown kind or field."""
    return IndexManifest.from_dict(IndexManifest.create(kind, documents).to_dict() | fields,
                                   where=f"the {kind} index being built").write(directory)


def read_manifest(directory: str | os.PathLike) -> IndexManifest:
    """The manifest of the index at ``directory`` (:meth:`IndexManifest.read`)."""
    return IndexManifest.read(directory)
