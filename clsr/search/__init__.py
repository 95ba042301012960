"""Search a clsr index: the manifest says which searcher reads it.

Run ``python -m clsr.search --index IDX --topics scifact --output run.trec`` (or ``clsr search``);
the flags mirror ``python -m pyserini.search.lucene``.

Concept indexes are searched by Pyserini's own ``LuceneImpactSearcher`` with a
``ClsrQueryEncoder``, so a hit's score is Lucene's: the integer dot product of the query's and the
document's impacts, over the query concepts the index holds (see MIN_IDF). Hits are ranked by the
project's one tie rule (`ranked`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from clsr import __version__
from clsr.encode.dense import DenseEncoder, EncoderConfig, query_encoding
from clsr.evaluate import Run, trec_eval_order
from clsr.index import BM25_B, BM25_K1, DocCodes, InvalidIndexError, read_manifest
from clsr.search.concept_encoder import load_concept_encoder
from clsr.search.engines import EngineConfig

log = logging.getLogger(__name__)


class Hit(NamedTuple):
    docid: str
    score: float


def ranked(hits: Iterable) -> list[Hit]:
    """Hits (anything with .docid and .score) in the project's one tie order: trec_eval's, score descending
    then docid descending (`clsr.evaluate.trec_eval_order`), so a rank shown is the rank evaluated."""
    return [Hit(docid, score) for docid, score in trec_eval_order((h.docid, float(h.score)) for h in hits)]


def answerable(queries: Mapping[str, str]) -> dict[str, str]:
    """The queries with some text; a blank query gets no hits rather than one arbitrary ranking
    (`clsr.data.read_topics_file` reports them by id)."""
    return {qid: text for qid, text in queries.items() if text.strip()}


def search_each(qids: Sequence[str], search_one: Callable[[str], list]) -> dict[str, list]:
    """{qid: search_one(qid)}, one query at a time; a query Lucene fails on is named in a one-line warning and
    gets no hits, so the others are still searched.

    Anserini's batch search loses every query of a batch when one fails; searchers fall back to this then.
    """
    from jnius import JavaException

    results: dict[str, list] = {}
    for qid in qids:
        try:
            results[qid] = search_one(qid)
        except JavaException as e:
            reason = f"{getattr(e, 'classname', '') or 'Java'}: {getattr(e, 'innermessage', '') or e}"
            log.warning("query %r could not be searched and gets no hits (%s)", qid, reason.splitlines()[0][:300])
            results[qid] = []
    return results


# Pyserini keeps a query term only if its idf = log(N / df) exceeds min_idf (default 0). A concept
# in every document has idf 0, so with the default a one-document index drops every query concept
# and finds nothing (field case 08); -1 keeps every concept the index holds.
MIN_IDF = -1


# Queries handed to Anserini at once by Bm25Searcher.batch_search. Anserini returns each hit as a Java ScoredDoc
# holding its Lucene document, about 2.3 KB of heap a hit (measured: 300 long SciFact queries x 1,000 hits held
# 0.70 GB), and the Python side holds a proxy per hit until the batch is converted; ArguAna's 1,401 queries in
# one batch peaked at 5.8 GB. 64 queries x 1,000 hits hold about 150 MB, dropped after each chunk.
BM25_CHUNK = 64


class Bm25Searcher:
    """Pyserini's LuceneSearcher with BM25 (k1=0.9, b=0.4 unless given)."""

    def __init__(self, index_dir: str | os.PathLike, k1: float = BM25_K1, b: float = BM25_B):
        from clsr.jvm import java_path, pyserini_lucene

        self.manifest = read_manifest(index_dir)
        self._searcher = pyserini_lucene().LuceneSearcher(java_path(index_dir))
        self._searcher.set_bm25(k1, b)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return ranked(self._searcher.search(query, k)) if query.strip() else []

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1,
                     progress: bool | None = None) -> Run:
        """A run for many queries on `threads` threads, handed to Lucene BM25_CHUNK (or 4 x `threads`) queries at a
        time, with a progress bar when there are more than 100 queries (or as `progress` says). A query Lucene
        fails on is named in a warning and gets no hits; the others are searched (see `search_each`)."""
        from clsr.progress import progress_bar

        asked = answerable(queries)
        qids = list(asked)
        progress = len(qids) > 100 if progress is None else progress
        step = max(BM25_CHUNK, 4 * threads)  # 4 queries a thread at least, so threads idle only at a chunk's end
        run: Run = {}
        with progress_bar(total=len(qids), desc="searching", unit="query", enabled=progress) as bar:
            for start in range(0, len(qids), step):
                chunk = qids[start:start + step]
                run.update(self._search_chunk({qid: asked[qid] for qid in chunk}, k, threads))
                bar.update(len(chunk))
        return {qid: run.get(qid, []) for qid in queries}

    def _search_chunk(self, queries: Mapping[str, str], k: int, threads: int) -> dict[str, list[Hit]]:
        """One chunk's hits as (docid, score): Anserini's Java hits are let go before the next chunk."""
        from jnius import JavaException

        qids = list(queries)
        try:
            results = self._searcher.batch_search(list(queries.values()), qids, k, threads)
        except JavaException:  # one failed query fails Anserini's whole batch: find it, keep the others
            results = search_each(qids, lambda qid: self._searcher.search(queries[qid], k))
        return {qid: ranked(results[qid]) for qid in qids}


class DenseSearcher:
    """Exact inner-product search (FAISS flat) over a dense index's embeddings."""

    def __init__(self, index_dir: str | os.PathLike, encoder: DenseEncoder | None = None, dtype: str | None = None,
                 backend: str | None = None):
        """``backend`` and ``dtype`` default to those the index was built with (`query_encoding`), so queries get
        the documents' numerics on any CPU."""
        import faiss

        self.manifest = read_manifest(index_dir)
        if self.manifest.kind != "dense":
            raise InvalidIndexError(f"{index_dir} is a {self.manifest.kind} index, not a dense one")
        indexed_with = EncoderConfig.from_dict(self.manifest.encoder)
        if encoder is not None and encoder.config != indexed_with:
            raise InvalidIndexError(
                f"the query encoder does not match the index.\n  index {index_dir}: {indexed_with}\n"
                f"  query encoder: {encoder.config}")
        if encoder is None:
            backend, dtype = query_encoding(self.manifest.encoding, backend, dtype)
            encoder = DenseEncoder(indexed_with, dtype=dtype, backend=backend)
        self.encoder = encoder
        directory = Path(index_dir)
        embeddings = np.load(directory / "embeddings.npy")
        self.ids = (directory / "ids.txt").read_text(encoding="utf-8").split("\n")[:len(embeddings)]
        self.index = faiss.IndexFlatIP(embeddings.shape[1])
        self.index.add(embeddings)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        if vectors.ndim != 2 or vectors.shape[1] != self.index.d:
            raise ValueError(f"query vectors have shape {vectors.shape}, the index holds {self.index.d}-d vectors")
        scores, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, self.index.ntotal))
        return [ranked(Hit(self.ids[r], float(s)) for r, s in zip(row, score) if r >= 0)
                for row, score in zip(rows, scores)]

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_vectors(self.encoder.encode_queries([query]), k)[0] if query.strip() else []

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1) -> Run:
        asked = answerable(queries)
        qids = list(asked)
        vectors = self.encoder.encode_queries([asked[q] for q in qids], progress=len(qids) > 100,
                                              desc="encoding queries") if qids else np.zeros((0, self.index.d))
        run = dict(zip(qids, self.search_vectors(vectors, k))) if qids else {}
        return {qid: run.get(qid, []) for qid in queries}


class SharedConcept(NamedTuple):
    concept: str  # the term, e.g. "c1234"
    query_weight: int
    doc_weight: int

    @property
    def contribution(self) -> int:
        return self.query_weight * self.doc_weight


class ConceptHit(NamedTuple):
    docid: str
    score: float  # Lucene's; equals sum(c.contribution for c in concepts)
    concepts: tuple[SharedConcept, ...]  # the concepts query and document share, largest contribution first


def shared_concepts(query: Mapping[str, int], document: Mapping[str, int]) -> tuple[SharedConcept, ...]:
    """The concepts a (searchable) query vector and a document vector share, largest contribution first."""
    shared = [SharedConcept(term, query[term], int(impact)) for term, impact in document.items()
              if impact and term in query]
    return tuple(sorted(shared, key=lambda c: (-c.contribution, c.concept)))


class ClsrSearcher:
    """Search a concept index with Pyserini's LuceneImpactSearcher; hits name the concepts they share.

    ``steering`` ({latent: factor}) edits every query's concept weights before search (see
    ``clsr.index.concepts.steer_codes``). ``engine`` picks another engine for the postings (BMP or
    Seismic, `clsr.search.engines`), whose candidates are rescored exactly, so every hit's score is still
    Lucene's. Other options are those of :func:`load_concept_encoder` (encoder, sae_path, query_k,
    query_mode, force, ...).
    """

    def __init__(self, index_dir: str | os.PathLike, steering: Mapping[int, float] | None = None,
                 engine: EngineConfig | None = None, **options):
        from clsr.index.concepts import check_latents
        from clsr.jvm import java_path, pyserini_lucene
        from clsr.search.pyserini import ClsrQueryEncoder

        self.index_dir = str(index_dir)
        self.manifest = read_manifest(index_dir)
        self.concept_encoder = load_concept_encoder(index_dir, **options)
        check_latents(steering or {}, self.concept_encoder.sae.config.n_latents, "steered concept")
        self.concept_encoder.steering = dict(steering or {})  # {latent: factor}: --boost / --suppress
        self.query_encoder = ClsrQueryEncoder(concept_encoder=self.concept_encoder)
        self.doc_codes = DocCodes(index_dir)
        self.doc_words = None  # an index with words: every passage's word impacts (clsr.index.words)
        if self.manifest.words is not None:
            from clsr.index.words import DOC_WORDS_DIR, read_doc_words

            self.doc_words = read_doc_words(Path(index_dir) / DOC_WORDS_DIR)
        self.impact_searcher = pyserini_lucene().LuceneImpactSearcher(java_path(self.index_dir), self.query_encoder,
                                                                      min_idf=MIN_IDF)
        self._decoder = None  # (W_dec, b_dec) as float32 arrays, on first use
        self.engine = None
        if engine is not None and engine.name != "lucene":
            from clsr.search.engines import DocImpacts, open_engine

            self.doc_impacts = DocImpacts(self.doc_codes, self.concept_encoder.doc_quantizer,
                                          self.concept_encoder.sae.config.n_latents, self.doc_words)
            self.engine = open_engine(index_dir, self.doc_impacts, engine)

    def engine_search(self, vector: Mapping[str, int], k: int) -> list[Hit]:
        """The top ``k`` for a query vector from the BMP or Seismic engine: its candidates (``k``, or the
        config's ``depth`` if larger) rescored by their exact integer dot product, Lucene's score."""
        from clsr.search.engines import engine_top_k

        return [Hit(docid, score) for docid, score in engine_top_k(self.engine, self.doc_impacts, vector, k)]

    def searchable(self, vector: Mapping[str, int]) -> dict[str, int]:
        """The part of a query vector Pyserini sends to Lucene: concepts in the index with idf > min_idf."""
        idf, min_idf = self.impact_searcher.idf, self.impact_searcher.min_idf
        return {term: weight for term, weight in vector.items() if term in idf and idf[term] > min_idf}

    def doc_vector(self, docid: str) -> dict[str, int]:
        """The document's {term: impact}, as the Lucene index holds it: its concepts and, in an index with words, its
        words (KeyError for an unknown docid)."""
        from clsr.index.concepts import impact_vectors

        activations, latents = self.doc_codes.code(docid)
        vector = impact_vectors(activations[None], latents[None], self.concept_encoder.doc_quantizer)[0]
        if self.doc_words is not None:
            vector.update(self.doc_words.vector(self.doc_codes.row(docid)))
        return vector

    def shared_concepts(self, vector: Mapping[str, int], docid: str) -> tuple[SharedConcept, ...]:
        return shared_concepts(self.searchable(vector), self.doc_vector(docid))

    def reconstructions(self, docids: Sequence[str]) -> np.ndarray:
        """(len(docids), d) float32 decoded embeddings of these documents, in the order given."""
        rows = np.asarray([self.doc_codes.row(d) for d in docids], np.int64)
        return self.doc_codes.decoded(rows, self.concept_encoder.sae)

    def reconstruction_scores(self, docids: Sequence[str], vector: np.ndarray) -> np.ndarray:
        """``vector`` (d,) dotted with these documents' decoded embeddings, float32, in the order given; computed
        from their codes (`DocCodes.decoded_scores`: K multiply-adds a document) without decoding them."""
        if self.doc_codes.stored_reconstructions is not None:
            return self.reconstructions(docids) @ np.asarray(vector, np.float32)
        if self._decoder is None:
            sae = self.concept_encoder.sae
            self._decoder = (sae.W_dec.detach().to("cpu", torch.float32).numpy(),
                             sae.b_dec.detach().to("cpu", torch.float32).numpy())
        weights, bias = self._decoder
        vector = np.asarray(vector, np.float32)
        rows = np.asarray([self.doc_codes.row(d) for d in docids], np.int64)
        return self.doc_codes.decoded_scores(rows, weights @ vector, float(bias @ vector))

    def search_vector(self, vector: Mapping[str, int], k: int = 10) -> list[Hit]:
        """Search with a ready {term: integer weight} query (e.g. an edited one), as Pyserini would."""
        from jnius import autoclass

        java_map, java_int = autoclass("java.util.HashMap")(), autoclass("java.lang.Integer")
        for term, weight in self.searchable(vector).items():
            java_map.put(term, java_int(int(weight)))
        return ranked(self.impact_searcher.object.search(java_map, k)) if java_map.size() else []

    def rescore_with_doc_steering(self, vector: Mapping[str, int], hits: Sequence[tuple[str, float]],
                                  steering: Mapping[int, float]) -> list[Hit]:
        """Document-side amplification, for experiments: `hits` (scored by Lucene for `vector`) rescored
        as if every document's weight for each steered concept were multiplied by its factor."""
        from clsr.index.concepts import concept_term

        terms = {concept_term(latent): factor for latent, factor in steering.items()}
        searchable = self.searchable(vector)
        rescored = []
        for docid, score in hits:
            activations, latents = self.doc_codes.code(docid)
            impacts = dict(zip(map(concept_term, latents.tolist()),
                               self.concept_encoder.doc_quantizer.quantize(activations).tolist()))
            extra = sum((factor - 1) * searchable.get(t, 0) * impacts.get(t, 0) for t, factor in terms.items())
            rescored.append(Hit(docid, float(score + extra)))
        return ranked(rescored)

    def hits(self, query: str, k: int = 10) -> list[Hit]:
        """The top ``k`` (docid, score) for a query text, from this searcher's engine (Lucene unless another was
        opened), without the shared concepts: what a run holds. Blank: no hits."""
        if not query.strip():
            return []
        if self.engine is not None:
            return self.engine_search(self.query_encoder.encode(query), k)
        return ranked(self.impact_searcher.search(query, k))

    def search(self, query: str, k: int = 10) -> list[ConceptHit]:
        if not query.strip():
            return []
        with self.query_encoder.encoded([query]):  # encoded once, for the engine and for the shared concepts
            vector = self.query_encoder.encode(query)
            hits = self.hits(query, k)
        return [ConceptHit(h.docid, float(h.score), self.shared_concepts(vector, h.docid)) for h in hits]

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1, batch_size: int = 1,
                     progress: bool | None = None) -> Run:
        """A run for many queries, dense-encoded in batches first.

        As in ``python -m pyserini.search.lucene``: one query at a time unless ``threads`` or
        ``batch_size`` exceeds 1, then ``batch_size`` queries at once on ``threads`` threads. A query
        Lucene fails on is named in a warning and gets no hits; the others are searched (`search_each`).
        """
        from jnius import JavaException

        from clsr.progress import progress_bar

        asked = answerable(queries)
        qids = list(asked)
        progress = len(qids) > 100 if progress is None else progress
        texts = [asked[q] for q in qids]
        run: Run = {}
        step = max(batch_size, threads, 1)
        with self.query_encoder.encoded(texts, progress=progress):
            with progress_bar(total=len(qids), desc="searching", unit="query", enabled=progress) as bar:
                for start in range(0, len(qids), step):
                    chunk_ids, chunk_texts = qids[start:start + step], texts[start:start + step]
                    text_of = dict(zip(chunk_ids, chunk_texts))
                    try:
                        if self.engine is not None:
                            results = {qid: self.engine_search(self.query_encoder.encode(text_of[qid]), k)
                                       for qid in chunk_ids}
                        elif step == 1:
                            results = {chunk_ids[0]: self.impact_searcher.search(chunk_texts[0], k)}
                        else:
                            results = self.impact_searcher.batch_search(chunk_texts, chunk_ids, k, threads)
                    except JavaException:
                        results = search_each(chunk_ids,
                                              lambda qid, text_of=text_of: self.impact_searcher.search(text_of[qid], k))
                    run.update({qid: ranked(results[qid]) for qid in chunk_ids})
                    bar.update(len(chunk_ids))
        return {qid: run.get(qid, []) for qid in queries}


def open_searcher(index_dir: str | os.PathLike, **options) -> Bm25Searcher | DenseSearcher | ClsrSearcher:
    """The searcher for whatever kind of index `index_dir` is."""
    kind = read_manifest(index_dir).kind
    if kind == "bm25":
        return Bm25Searcher(index_dir, **options)
    if kind == "dense":
        return DenseSearcher(index_dir, **options)
    if kind == "concepts":
        return ClsrSearcher(index_dir, **options)
    raise InvalidIndexError(f"{index_dir}: clsr {__version__} cannot search {kind!r} indexes")
