"""clsr's concept encoders as Pyserini encoders: drop-in replacements for SPLADE's.

    from clsr.search.pyserini import ClsrQueryEncoder
    from pyserini.search.lucene import LuceneImpactSearcher

    searcher = LuceneImpactSearcher("indexes/scifact-concepts",
                                    query_encoder=ClsrQueryEncoder("indexes/scifact-concepts"))

works as it does with ``SpladeQueryEncoder``. Importing this module starts the JVM and imports
Pyserini the clsr way (see ``clsr.jvm``): ``pyserini.encode`` loads Anserini classes when imported,
builds an OpenAI client (Pyserini 1.6.0) and fetches the prebuilt-index catalogue (2.x).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from clsr.jvm import pyserini_lucene

pyserini_lucene()

from pyserini.encode import DocumentEncoder, QueryEncoder  # noqa: E402  (needs the JVM and Pyserini set up first)

from clsr.data import document_text  # noqa: E402
from clsr.errors import UsageError  # noqa: E402
from clsr.index.concepts import ConceptEncoder  # noqa: E402


def _concept_encoder(index_dir: str | os.PathLike | None, concept_encoder: ConceptEncoder | None,
                     options: dict) -> ConceptEncoder:
    if (index_dir is None) == (concept_encoder is None):
        raise ValueError("give either an index folder or a ConceptEncoder")
    if concept_encoder is not None:
        return concept_encoder
    from clsr.search.concept_encoder import load_concept_encoder

    return load_concept_encoder(index_dir, **options)


class ClsrQueryEncoder(QueryEncoder):
    """Query text -> {"c<latent>": integer weight}, with the encoder, SAE and query settings of an index.

    Texts are encoded with their whitespace normalised (see `cache_key`), so that clsr, this class
    and the query cache that stock Pyserini reads all encode the very same string.

    Options (encoder, sae_path, query_k, query_mode, force, device, dtype) are those of
    ``clsr.search.load_concept_encoder``.
    """

    def __init__(self, index_dir: str | os.PathLike | None = None, *, concept_encoder: ConceptEncoder | None = None,
                 **options):
        self.concept_encoder = _concept_encoder(index_dir, concept_encoder, options)
        self._encoded: dict[str, dict[str, int]] = {}
        self._embeddings: dict[str, np.ndarray] = {}

    def encode(self, text: str, **kwargs) -> dict[str, int]:
        key = cache_key(text)
        vector = self._encoded.get(key)
        return vector if vector is not None else self.concept_encoder.encode_queries([key])[0]

    def prime(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Encode many queries in batches now, so that `encode` (called by Pyserini one by one) only looks
        them up. Returns the texts' dense embeddings, in order (the hybrid fuser scores with them)."""
        keys = [cache_key(text) for text in texts]
        todo = list(dict.fromkeys(key for key in keys if key not in self._encoded))
        if todo:
            embeddings = self.concept_encoder.dense.encode_queries(todo, progress=progress, desc="encoding queries")
            self._encoded.update(zip(todo, self.concept_encoder.query_vectors(embeddings, todo)))
            self._embeddings.update(zip(todo, embeddings))
        return np.stack([self._embeddings[key] for key in keys]) if keys else np.zeros((0, 0), np.float32)

    def forget(self, texts: Sequence[str] | None = None) -> None:
        """Drop the given texts' encodings (all when None)."""
        if texts is None:
            self._encoded.clear()
            self._embeddings.clear()
        for key in map(cache_key, texts or ()):
            self._encoded.pop(key, None)
            self._embeddings.pop(key, None)

    @contextlib.contextmanager
    def encoded(self, texts: Sequence[str], progress: bool = False) -> Iterator[np.ndarray]:
        """Prime `texts` for the block (yielding their embeddings); forget afterwards only what was new."""
        new = [text for text in dict.fromkeys(texts) if cache_key(text) not in self._encoded]
        try:
            yield self.prime(texts, progress=progress)
        finally:
            self.forget(new)


class ClsrDocumentEncoder(DocumentEncoder):
    """Passages -> {"c<latent>": integer impact}, exactly as the index they come from stores them."""

    def __init__(self, index_dir: str | os.PathLike | None = None, *, concept_encoder: ConceptEncoder | None = None,
                 **options):
        self.concept_encoder = _concept_encoder(index_dir, concept_encoder, options)

    def encode(self, texts: Sequence[str], titles: Sequence[str] | None = None, **kwargs) -> list[dict[str, int]]:
        if titles is not None:
            texts = [document_text(title, text) for title, text in zip(titles, texts)]
        return self.concept_encoder.encode_documents(list(texts))


def cache_key(text: str) -> str:
    """A query's text as the cache stores it: one line, whitespace runs as single spaces.

    Pyserini reads topics from qid<TAB>text lines and looks each up by ``text.strip()``; a tab or
    newline inside a query would otherwise break the file or miss the lookup.
    """
    return " ".join(text.split())


def write_query_cache(encoder: ClsrQueryEncoder, topics: Mapping[str, str], output: str | os.PathLike,
                      topics_output: str | os.PathLike | None = None) -> None:
    """Pyserini's pre-encoded query JSONL ({"id", "contents", "vector"}), and optionally the topics for
    ``python -m pyserini.search.lucene --topics``.

    Topics go to ``topics_output`` as Pyserini's JSON topics ({qid: {"title": text}}), whose ids it
    keeps as written; as ``.tsv`` only when every id survives Pyserini's integer id reader (which turns
    ``001`` into ``1``). A blank query gets an empty vector, so stock Pyserini finds no hits for it,
    as clsr does. Raises UsageError for a .tsv that would change an id, or another suffix.
    """
    if topics_output is not None:
        check_topics_output(topics_output, topics)
    qids = list(topics)
    texts = [cache_key(topics[qid]) for qid in qids]
    encoder.prime([t for t in texts if t], progress=len(texts) > 100)
    try:
        vectors = [encoder.encode(text) if text else {} for text in texts]  # looked up, not re-encoded
    finally:
        encoder.forget()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        for qid, text, vector in zip(qids, texts, vectors):
            f.write(json.dumps({"id": qid, "contents": text, "vector": vector}) + "\n")
    if topics_output is not None:
        path = Path(topics_output)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".json":
            path.write_text(json.dumps({qid: {"title": text} for qid, text in zip(qids, texts)}, indent=1,
                                       ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            path.write_text("".join(f"{qid}\t{text}\n" for qid, text in zip(qids, texts)), encoding="utf-8")


def check_topics_output(path: str | os.PathLike, topics: Mapping[str, str]) -> None:
    """Raise UsageError unless Pyserini will read the topics at ``path`` back with the same ids."""

    suffix = Path(path).suffix
    if suffix == ".json":
        return
    if suffix != ".tsv":
        raise UsageError(f"--topics-output {path}: use a .json file (Pyserini's JSON topics keep every id)")
    changed = [qid for qid in topics if not _survives_integer_reader(qid)]
    if changed:
        raise UsageError(f"--topics-output {path}: Pyserini reads .tsv topics with integer ids, so query id "
                         f"{changed[0]!r} would not come back unchanged ({len(changed)} such ids); write a .json "
                         "file instead, e.g. --topics-output topics.json")


def _survives_integer_reader(qid: str) -> bool:
    return qid.isascii() and qid.isdigit() and str(int(qid)) == qid
