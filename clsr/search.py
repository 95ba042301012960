"""Search a clsr index: the manifest says which searcher reads it.

Run ``python -m clsr.search --index IDX --topics scifact --output run.trec`` (or ``clsr search``);
the flags mirror ``python -m pyserini.search.lucene``.

Concept indexes are searched by Pyserini's own ``LuceneImpactSearcher`` with a
``ClsrQueryEncoder``, so a hit's score is Lucene's: the integer dot product of the query's and the
document's impacts, over the query concepts Pyserini keeps (those in the index with idf > 0).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from . import __version__
from .dense import DenseEncoder, EncoderConfig, recorded_backend
from .evaluate import Run
from .index import BM25_K1, BM25_B, DocCodes, InvalidIndexError, read_manifest


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

    def __init__(self, index_dir: str | os.PathLike, encoder: DenseEncoder | None = None, dtype: str = "auto",
                 backend: str | None = None):
        """``backend`` defaults to the one the index was built with, so queries get the documents' numerics."""
        import faiss

        self.manifest = read_manifest(index_dir)
        if self.manifest["kind"] != "dense":
            raise InvalidIndexError(f"{index_dir} is a {self.manifest['kind']} index, not a dense one")
        indexed_with = EncoderConfig.from_dict(self.manifest["encoder"])
        if encoder is not None and encoder.config != indexed_with:
            raise InvalidIndexError(
                f"the query encoder does not match the index.\n  index {index_dir}: {indexed_with}\n"
                f"  query encoder: {encoder.config}")
        self.encoder = encoder or DenseEncoder(indexed_with, dtype=dtype,
                                               backend=backend or recorded_backend(self.manifest))
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


def _recorded_sae_path(index_dir: str | os.PathLike, recorded: dict) -> Path:
    from .sae import DEFAULT_SAE, WEIGHTS_NAME, default_sae_path

    candidates = [Path(index_dir) / recorded["path"]]  # a relative path is an SAE kept inside the index
    if recorded["name"] == DEFAULT_SAE and default_sae_path() is not None:
        candidates.append(default_sae_path())  # the bundled SAE, wherever this clsr is installed
    for candidate in candidates:
        if (candidate / WEIGHTS_NAME).exists():
            return candidate
    raise InvalidIndexError(f"{index_dir} was built with the SAE at {recorded['path']}, which is not there; "
                            "pass its folder with --sae")


def load_concept_encoder(index_dir: str | os.PathLike, *, encoder: EncoderConfig | None = None,
                         sae_path: str | os.PathLike | None = None, query_k: int | None = None,
                         query_mode: str | None = None, force: bool = False, device: str = "cpu",
                         dtype: str = "auto", batch_size: int = 32, backend: str | None = None):
    """The ConceptEncoder a concept index was built with, checked against the manifest.

    ``encoder`` and ``sae_path`` default to the index's own; given ones that differ from the
    manifest are refused (naming both sides) unless ``force``. ``query_k``/``query_mode`` override
    the index's query defaults. ``backend`` defaults to the index's (see :func:`clsr.dense.recorded_backend`).
    """
    from .concepts import ConceptEncoder, Quantizer
    from .sae import SaeMismatchError, TopKSae, sae_checksum

    manifest = read_manifest(index_dir)
    if manifest["kind"] != "concepts":
        raise InvalidIndexError(f"{index_dir} is a {manifest['kind']} index, not a concept index")
    indexed_with = EncoderConfig.from_dict(manifest["encoder"])
    if encoder is not None and encoder != indexed_with and not force:
        raise InvalidIndexError(f"the query encoder does not match the index (pass --force to search anyway).\n"
                                f"  index {index_dir}: {indexed_with}\n  query encoder: {encoder}")
    recorded = manifest["sae"]
    sae_path = Path(sae_path) if sae_path is not None else _recorded_sae_path(index_dir, recorded)
    checksum = sae_checksum(sae_path)
    if checksum != recorded["sha256"] and not force:
        raise SaeMismatchError(
            "the SAE does not match the index (pass --force to search anyway).\n"
            f"  index {index_dir}: SAE {recorded['name']} ({recorded['n_latents']} latents, k={recorded['k']}), "
            f"sha256 {recorded['sha256'][:16]}\n  given {sae_path}: sha256 {checksum[:16]}")
    sae = TopKSae.load_from_disk(sae_path, device=device)
    query = manifest["query"]
    dense = DenseEncoder(encoder or indexed_with, device=device, dtype=dtype, batch_size=batch_size,
                         backend=backend or recorded_backend(manifest))
    return ConceptEncoder(dense,
                          sae, doc_k=manifest["doc_k"], query_k=query_k or query["k"],
                          query_mode=query_mode or query["mode"],
                          doc_quantizer=Quantizer.from_dict(manifest["doc_quantizer"]),
                          query_quantizer=Quantizer.from_dict(query["quantizer"]))


class ClsrSearcher:
    """Search a concept index with Pyserini's LuceneImpactSearcher; hits name the concepts they share.

    ``steering`` ({latent: factor}) edits every query's concept weights before search (see
    ``clsr.concepts.steer_codes``). Other options are those of :func:`load_concept_encoder`
    (encoder, sae_path, query_k, query_mode, force, ...).
    """

    def __init__(self, index_dir: str | os.PathLike, steering: Mapping[int, float] | None = None, **options):
        from .jvm import pyserini_lucene
        from .pyserini_encoders import ClsrQueryEncoder

        self.index_dir = str(index_dir)
        self.manifest = read_manifest(index_dir)
        self.concept_encoder = load_concept_encoder(index_dir, **options)
        self.concept_encoder.steering = dict(steering or {})  # {latent: factor}: --boost / --suppress
        self.query_encoder = ClsrQueryEncoder(concept_encoder=self.concept_encoder)
        self.doc_codes = DocCodes(index_dir)
        self.impact_searcher = pyserini_lucene().LuceneImpactSearcher(self.index_dir, self.query_encoder)

    def searchable(self, vector: Mapping[str, int]) -> dict[str, int]:
        """The part of a query vector Pyserini sends to Lucene: concepts in the index with idf > min_idf."""
        idf, min_idf = self.impact_searcher.idf, self.impact_searcher.min_idf
        return {term: weight for term, weight in vector.items() if term in idf and idf[term] > min_idf}

    def shared_concepts(self, vector: Mapping[str, int], docid: str) -> tuple[SharedConcept, ...]:
        from .concepts import concept_term

        activations, latents = self.doc_codes.code(docid)
        impacts = self.concept_encoder.doc_quantizer.quantize(activations)
        searchable = self.searchable(vector)
        shared = [SharedConcept(term, searchable[term], int(impact))
                  for term, impact in zip(map(concept_term, latents.tolist()), impacts) if impact and term in searchable]
        return tuple(sorted(shared, key=lambda c: (-c.contribution, c.concept)))

    def search_vector(self, vector: Mapping[str, int], k: int = 10) -> list[Hit]:
        """Search with a ready {term: integer weight} query (e.g. an edited one), as Pyserini would."""
        from jnius import autoclass

        java_map, java_int = autoclass("java.util.HashMap")(), autoclass("java.lang.Integer")
        for term, weight in self.searchable(vector).items():
            java_map.put(term, java_int(int(weight)))
        return [Hit(h.docid, float(h.score)) for h in self.impact_searcher.object.search(java_map, k)]

    def rescore_with_doc_steering(self, vector: Mapping[str, int], hits: Sequence[tuple[str, float]],
                                  steering: Mapping[int, float]) -> list[Hit]:
        """Document-side amplification, for experiments: `hits` (scored by Lucene for `vector`) rescored
        as if every document's weight for each steered concept were multiplied by its factor."""
        from .concepts import concept_term

        terms = {concept_term(latent): factor for latent, factor in steering.items()}
        searchable = self.searchable(vector)
        rescored = []
        for docid, score in hits:
            activations, latents = self.doc_codes.code(docid)
            impacts = dict(zip(map(concept_term, latents.tolist()),
                               self.concept_encoder.doc_quantizer.quantize(activations).tolist()))
            extra = sum((factor - 1) * searchable.get(t, 0) * impacts.get(t, 0) for t, factor in terms.items())
            rescored.append(Hit(docid, float(score + extra)))
        return sorted(rescored, key=lambda hit: (hit.score, hit.docid), reverse=True)

    def search(self, query: str, k: int = 10) -> list[ConceptHit]:
        with self.query_encoder.encoded([query]):  # encoded once, for Lucene and for the shared concepts
            vector = self.query_encoder.encode(query)
            hits = self.impact_searcher.search(query, k)
        return [ConceptHit(h.docid, float(h.score), self.shared_concepts(vector, h.docid)) for h in hits]

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1, batch_size: int = 1,
                     progress: bool | None = None) -> Run:
        """A run for many queries, dense-encoded in batches first.

        As in ``python -m pyserini.search.lucene``: one query at a time unless ``threads`` or
        ``batch_size`` exceeds 1, then ``batch_size`` queries at once on ``threads`` threads.
        """
        from tqdm.auto import tqdm

        qids = list(queries)
        progress = len(qids) > 100 if progress is None else progress
        texts = [queries[q] for q in qids]
        run: Run = {}
        step = max(batch_size, threads, 1)
        with self.query_encoder.encoded(texts, progress=progress):
            with tqdm(total=len(qids), desc="searching", unit="query", disable=not progress) as bar:
                for start in range(0, len(qids), step):
                    chunk_ids, chunk_texts = qids[start:start + step], texts[start:start + step]
                    if step == 1:
                        results = {chunk_ids[0]: self.impact_searcher.search(chunk_texts[0], k)}
                    else:
                        results = self.impact_searcher.batch_search(chunk_texts, chunk_ids, k, threads)
                    run.update({qid: [Hit(h.docid, float(h.score)) for h in results[qid]] for qid in chunk_ids})
                    bar.update(len(chunk_ids))
        return run


def open_searcher(index_dir: str | os.PathLike, **options) -> Bm25Searcher | DenseSearcher | ClsrSearcher:
    """The searcher for whatever kind of index `index_dir` is."""
    kind = read_manifest(index_dir)["kind"]
    if kind == "bm25":
        return Bm25Searcher(index_dir, **options)
    if kind == "dense":
        return DenseSearcher(index_dir, **options)
    if kind == "concepts":
        return ClsrSearcher(index_dir, **options)
    raise InvalidIndexError(f"{index_dir}: clsr {__version__} cannot search {kind!r} indexes")


def main(argv: Sequence[str] | None = None) -> None:
    import sys

    from .cli import main as cli_main

    cli_main(["search", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    main()
