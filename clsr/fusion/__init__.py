"""Fusing runs (interpolation with min-max or z-score per query, reciprocal rank fusion) and the
hybrid searcher, which fuses the concept index with dense scores of the reconstructed documents.

Runs are clsr's ``Run`` (query id -> [(docid, score), ...]); any TREC run file works, including
Pyserini's BM25, SPLADE and dense runs (``clsr.evaluate.read_run``), and the fused run is written
as a TREC file that ``python -m pyserini.fusion`` and ``trec_eval`` read.

Run ``python -m clsr.fusion --runs a.trec b.trec --output fused.trec`` (or ``clsr fuse``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from clsr.evaluate import Run, trec_eval_order
from clsr.index.manifest import HybridAlpha, IndexManifest

log = logging.getLogger(__name__)

NORMALIZATIONS = ("minmax", "zscore", "none")
RRF_K = 60
HYBRID_MODES = ("rerank", "full")
QUERY_SIDES = ("original", "reconstructed")
DEFAULT_ALPHA = 0.5  # weight of the sparse run where none was tuned (indexes built before tuning at build time)
PSEUDO_QUERIES = 300  # pseudo-queries that tune a new concept index's alpha (transfer.md: within 0.002 of a real split)


def normalize(scores: Sequence[float], method: str = "minmax") -> list[float]:
    """One query's scores, min-max scaled to [0, 1] or z-scored (a constant list maps to zeros), or as they
    are (``none``)."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, not {method!r}")
    if not scores or method == "none":
        return list(scores)
    if method == "minmax":
        low, high = min(scores), max(scores)
        return [(s - low) / (high - low) if high > low else 0.0 for s in scores]
    mean = sum(scores) / len(scores)
    deviation = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return [(s - mean) / deviation if deviation > 0 else 0.0 for s in scores]


def _ranked(scores: dict[str, float], k: int | None) -> list[tuple[str, float]]:
    ranked = trec_eval_order(scores.items())  # the one tie rule: the written run means what it shows
    return ranked[:k] if k else ranked


def interpolate(first: Run, second: Run, alpha: float, normalization: str = "minmax",
                k: int | None = 1000) -> Run:
    """alpha * norm(first) + (1 - alpha) * norm(second), per query.

    A document missing from one run gets that run's lowest normalised score for the query (its
    score is at most that, as it ranked below the cut); a query missing from one run is the other
    run's, normalised. With ``normalization="none"`` scores are used as they are and a missing
    document adds 0: exactly pyserini.fusion's interpolation.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    fused: Run = {}
    for qid in dict.fromkeys([*first, *second]):
        normalized = []
        for run in (first, second):
            hits = run.get(qid, [])
            normalized.append(dict(zip((d for d, _ in hits), normalize([s for _, s in hits], normalization))))
        floors = [min(n.values()) if n and normalization != "none" else 0.0 for n in normalized]
        docids = dict.fromkeys([*normalized[0], *normalized[1]])
        scores = {d: alpha * normalized[0].get(d, floors[0]) + (1 - alpha) * normalized[1].get(d, floors[1])
                  for d in docids}
        fused[qid] = _ranked(scores, k)
    return fused


def reciprocal_rank_fusion(runs: Sequence[Run], rrf_k: int = RRF_K, k: int | None = 1000) -> Run:
    """sum over runs of 1 / (rrf_k + rank), ranks from 1, as Cormack et al. (2009) and pyserini.fusion."""
    fused: Run = {}
    for qid in dict.fromkeys(q for run in runs for q in run):
        scores: dict[str, float] = {}
        for run in runs:
            for rank, (docid, _) in enumerate(run.get(qid, []), 1):
                scores[docid] = scores.get(docid, 0.0) + 1.0 / (rrf_k + rank)
        fused[qid] = _ranked(scores, k)
    return fused


def fuse(runs: Sequence[Run], method: str = "interpolation", alpha: float = 0.5, normalization: str = "minmax",
         rrf_k: int = RRF_K, k: int | None = 1000, depth: int | None = None) -> Run:
    """Dispatch on `method`: `interpolation` (exactly two runs, alpha on the first) or `rrf` (any number).

    ``depth`` keeps each run's first hits per query (in the run's own order, as read from its rank
    column), as pyserini.fusion's ``--depth``; ties in the fused scores follow `trec_eval_order`.
    """
    if depth is not None:
        runs = [{qid: hits[:depth] for qid, hits in run.items()} for run in runs]
    if method == "rrf":
        return reciprocal_rank_fusion(runs, rrf_k, k)
    if method == "interpolation":
        if len(runs) != 2:
            raise ValueError(f"interpolation fuses exactly two runs, not {len(runs)}; use rrf for more")
        return interpolate(runs[0], runs[1], alpha, normalization, k)
    raise ValueError(f"fusion method must be interpolation or rrf, not {method!r}")


class HybridSearcher:
    """The concept index fused with dense scores of the documents' reconstructed embeddings.

    The dense score is the query embedding (``original``, or ``reconstructed`` through the SAE)
    times the document's decoded embedding, computed from its code in ``doc_codes/``. ``rerank`` rescores the
    sparse top-``depth`` candidates (no dense index needed); ``full`` searches all reconstructions
    exactly (FAISS flat) and fuses the two top-``depth`` lists. Other options go to ClsrSearcher.

    ``sparse`` is a ready concept searcher instead of ``index_dir``: e.g. a
    ``clsr.search.milvus.MilvusSearcher``, whose collection serves the reconstructions and, in ``full``
    mode, their exact search; the fusion is clsr's either way.
    """

    def __init__(self, index_dir: str | os.PathLike | None = None, *, mode: str = "rerank",
                 query_side: str = "original", method: str = "interpolation", alpha: float | None = None,
                 normalization: str = "minmax", depth: int = 1000, sparse=None, **options):
        from clsr.search import ClsrSearcher

        if mode not in HYBRID_MODES or query_side not in QUERY_SIDES:
            raise ValueError(f"mode must be one of {HYBRID_MODES} and query_side one of {QUERY_SIDES}")
        if (index_dir is None) == (sparse is None):
            raise ValueError("give either an index folder or a concept searcher (sparse=...)")
        fuse([{}, {}], method, DEFAULT_ALPHA if alpha is None else alpha, normalization)  # validates them up front
        self.sparse = sparse if sparse is not None else ClsrSearcher(index_dir, **options)
        self.alpha_source = "given"
        if alpha is None:  # the alpha tuned when the index was built (or later by `clsr tune-alpha --record`)
            alpha = recorded_alpha(getattr(self.sparse, "manifest", {}), where=index_dir or "the collection")
            record = getattr(getattr(self.sparse, "manifest", None), "hybrid_alpha", None)
            self.alpha_source = (f"tuned on {record.tuned_on}, recorded in the manifest" if record is not None
                                 else "the default: none recorded")
        self.mode, self.query_side, self.depth = mode, query_side, depth
        self.method, self.alpha, self.normalization = method, alpha, normalization
        self._faiss = None
        if mode == "full" and hasattr(self.sparse, "dense_search"):
            pass  # the backend searches its reconstructions itself (Milvus: FLAT, exact)
        elif mode == "full":
            import faiss

            codes, sae = self.sparse.doc_codes, self.sparse.concept_encoder.sae
            self._faiss = faiss.IndexFlatIP(sae.config.d_in)
            for start in range(0, len(codes.ids), 65536):  # decoded in slices: a slice's floats at a time
                self._faiss.add(np.ascontiguousarray(codes.decoded(slice(start, start + 65536), sae), np.float32))

    def describe(self) -> str:
        """What this hybrid does, in one line: "alpha 0.2 (tuned on 300 pseudo-queries, ...), interpolation of minmax
        scores; rerank of the sparse top 1000 (engine seismic); the original query for the dense side"."""
        engine = getattr(getattr(self.sparse, "engine", None), "config", None)
        fusion = (f"alpha {self.alpha} ({self.alpha_source}), interpolation of {self.normalization} scores"
                  if self.method == "interpolation" else f"reciprocal rank fusion (k={RRF_K})")
        sparse = (f"engine {engine.name}" if engine is not None
                  else "engine lucene" if hasattr(self.sparse, "impact_searcher") else type(self.sparse).__name__)
        mode = (f"rerank of the sparse top {self.depth}" if self.mode == "rerank"
                else f"the sparse and the dense top {self.depth} fused")
        return f"{fusion}; {mode} ({sparse}); the {self.query_side} query for the dense side"

    def query_vectors(self, embeddings: np.ndarray) -> np.ndarray:
        """The dense side's query vectors; steering moves them along the decoder's concept directions."""
        from clsr.index.concepts import QUERY_ROWS, steer_codes  # here, not at import: `clsr fuse` needs no torch

        encoder = self.sparse.concept_encoder
        if self.query_side == "original":
            return encoder.steer_embeddings(embeddings)
        values, indices = encoder.sae.encode_numpy(embeddings, min(encoder.query_k, encoder.sae.config.k),
                                                   batch_size=QUERY_ROWS)
        return encoder.sae.decode_numpy(*steer_codes(values, indices, encoder.steering))

    def component_runs(self, queries: Mapping[str, str], threads: int = 1, batch_size: int = 1,
                       progress: bool | None = None) -> tuple[Run, Run]:
        """The sparse run and the dense-reconstruction run, each `depth` deep, before fusion. Progress bars (for
        encoding, searching and the dense side) show for more than 100 queries unless `progress` says."""
        from clsr.progress import progress_bar

        qids = list(queries)
        progress = len(qids) > 100 if progress is None else progress
        with self.sparse.query_encoder.encoded([queries[q] for q in qids], progress=progress) as embeddings:
            sparse = self.sparse.batch_search(queries, k=self.depth, threads=threads, batch_size=batch_size,
                                              progress=progress)
        vectors = self.query_vectors(embeddings)
        dense: Run = {}
        if self.mode == "full" and self._faiss is None:
            for qid, hits in zip(qids, self.sparse.dense_search(vectors, self.depth)):
                dense[qid] = trec_eval_order(hits) if queries[qid].strip() else []
        elif self.mode == "full":
            scores, rows = self._faiss.search(np.ascontiguousarray(vectors, np.float32),
                                              min(self.depth, self._faiss.ntotal))
            ids = self.sparse.doc_codes.ids
            for qid, row_scores, row_ids in zip(qids, scores, rows):
                dense[qid] = (trec_eval_order((ids[r], float(s)) for r, s in zip(row_ids, row_scores) if r >= 0)
                              if queries[qid].strip() else [])
        else:
            for qid, vector in progress_bar(zip(qids, vectors), total=len(qids), desc="dense scores of the hits",
                                            unit="query", enabled=progress):
                docids = [docid for docid, _ in sparse[qid]]
                scores = self.sparse.reconstruction_scores(docids, vector) if docids else []
                dense[qid] = trec_eval_order(zip(docids, map(float, scores)))
        return sparse, dense

    def batch_search(self, queries: Mapping[str, str], k: int = 1000, threads: int = 1, batch_size: int = 1,
                     progress: bool | None = None) -> Run:
        sparse, dense = self.component_runs(queries, threads, batch_size, progress)
        return fuse([sparse, dense], self.method, self.alpha, self.normalization, k=k)

    def search(self, query: str, k: int = 10):
        return self.batch_search({"query": query}, k=k, progress=False)["query"]


def tune_alpha(searcher: HybridSearcher, topics: Mapping[str, str], qrels, metric: str = "ndcg@10",
               alphas: Sequence[float] = tuple(i / 10 for i in range(11)), relevance_threshold: int = 1
               ) -> dict[float, float]:
    """`metric` of the interpolated hybrid at each alpha; the component runs are searched once."""
    sparse, dense = searcher.component_runs(topics)
    return interpolation_curve(sparse, dense, qrels, searcher.normalization, metric, alphas, relevance_threshold)


WORDS_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0)


def tune_words_weight(index_dir: str | os.PathLike, topics: Mapping[str, str], qrels, metric: str = "ndcg@10",
                      weights: Sequence[float] = WORDS_WEIGHTS, relevance_threshold: int = 1,
                      **options) -> dict[float, float]:
    """``metric`` of an index's search (words and concepts in one query, `clsr.index.mix`) at each words weight W,
    on ``topics`` judged by ``qrels``: what a user with a dev split tunes instead of the default W, which was chosen
    across collections (docs/concept-index.md). ``options`` go to ClsrSearcher (encoder settings, an engine).
    Raises UsageError for an index without words."""
    from clsr.evaluate import evaluate
    from clsr.search import ClsrSearcher

    curve = {}
    for weight in weights:
        run = ClsrSearcher(index_dir, words_weight=weight, **options).batch_search(topics, k=1000, progress=False)
        curve[weight] = round(evaluate(run, qrels, [metric], relevance_threshold)[metric], 4)
    return curve


def record_words_weight(index_dir: str | os.PathLike, weight: float) -> IndexManifest:
    """Write ``weight`` as the index's default words weight (the manifest's ``query.words_weight``), atomically."""
    import dataclasses

    manifest = IndexManifest.read(index_dir)
    return manifest.replace(query=dataclasses.replace(manifest.query, words_weight=weight)).write(index_dir)


def recorded_alpha(manifest: IndexManifest | None, where: object = "the index") -> float:
    """The hybrid alpha a concept index's manifest records (``hybrid_alpha``, tuned on pseudo-queries at build
    time), or DEFAULT_ALPHA with a warning for an index built before that, naming the command that tunes it."""
    record = manifest.hybrid_alpha if manifest is not None else None
    if record is not None:
        return float(record.alpha)
    log.warning("%s records no tuned hybrid alpha: using %s; tune it with `clsr tune-alpha --index ... "
                "--pseudo-queries %d --record` (no judgments needed)", where, DEFAULT_ALPHA, PSEUDO_QUERIES)
    return DEFAULT_ALPHA


def tune_and_record_alpha(index_dir: str | os.PathLike, documents: Iterable | str | os.PathLike,
                          n: int = PSEUDO_QUERIES, seed: int = 0, metric: str = "ndcg@10", **options) -> HybridAlpha:
    """Tune the hybrid's alpha of a concept index on ``n`` pseudo-queries drawn from ``documents`` (its corpus's
    documents, or its source, streamed: :func:`pseudo_queries`, no judgments) and record it in the index's manifest
    as ``hybrid_alpha``: :class:`clsr.index.manifest.HybridAlpha`. Returns that record. ``options`` go to
    :class:`HybridSearcher` (encoder settings). Source of the method: issue 10's pseudo-queries;
    benchmarks/results/transfer.md compares the alpha they pick with a real split's."""
    topics, qrels = pseudo_queries(documents, n, seed=seed)
    searcher = HybridSearcher(index_dir, alpha=DEFAULT_ALPHA, **options)
    curve = tune_alpha(searcher, topics, qrels, metric=metric)
    return record_alpha(index_dir, curve, metric, f"{len(topics)} pseudo-queries, seed {seed}")


def record_alpha(index_dir: str | os.PathLike, curve: Mapping[float, float], metric: str,
                 tuned_on: str) -> HybridAlpha:
    """Write the best alpha of ``curve`` (alpha -> metric) into the index's manifest as ``hybrid_alpha``, which
    searchers use when no alpha is given; atomically (:meth:`IndexManifest.write`), so a reader sees the old
    manifest or the new one. Returns that record."""
    record = HybridAlpha(alpha=best_alpha(curve), metric=metric, tuned_on=tuned_on,
                         curve={f"{alpha:.1f}": value for alpha, value in curve.items()})
    IndexManifest.read(index_dir).replace(hybrid_alpha=record).write(index_dir)
    return record


def pseudo_queries(documents: Iterable | str | os.PathLike, n: int = 300, seed: int = 0, min_words: int = 6,
                   max_words: int = 16) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Self-supervised tuning topics drawn from the corpus itself: (topics, qrels), no judgments read.

    For `n` passages drawn at random (of those with at least `min_words` words), the query is one
    of their sentences of `min_words`..`max_words` words if they have any, else a random span of
    that length, and the source passage is its one relevant document. Such queries stand in for a
    tuning split where there is none, as the spans do for the SAE's KL terms (issue 10).

    ``documents`` are the corpus's `clsr.data.Document`s, or its source (a path or collection name, as
    `clsr.data.iter_corpus` takes), which is then streamed twice and never held: once to count the passages long
    enough, once to keep the `n` drawn. The draws are the same either way for a seed: the permutation of the
    candidates' numbers (8 bytes a candidate, for a moment) picks the same passages in the same order.
    """
    from clsr.sae.data import random_spans, split_sentences

    rng = np.random.default_rng(seed)

    def long_enough(doc) -> bool:
        return len(doc.text.split()) >= min_words

    if isinstance(documents, (str, os.PathLike)):
        from clsr.data import iter_corpus

        count = sum(1 for doc in iter_corpus(documents) if long_enough(doc))
        drawn = rng.permutation(count)[:n].tolist()
        kept = dict.fromkeys(drawn)
        candidates = (doc for doc in iter_corpus(documents) if long_enough(doc))
        for number, doc in enumerate(candidates):
            if number in kept:
                kept[number] = doc
        chosen = [kept[number] for number in drawn]
    else:
        candidates = [doc for doc in documents if long_enough(doc)]
        chosen = [candidates[row] for row in rng.permutation(len(candidates))[:n]]
    topics: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for doc in chosen:
        sentences = [s for s in split_sentences(doc.text, min_words) if len(s.split()) <= max_words]
        text = sentences[int(rng.integers(len(sentences)))] if sentences else random_spans(
            doc.text, rng, 1, min_words, max_words)[0]
        qid = f"pseudo-{len(topics)}"
        topics[qid], qrels[qid] = text, {doc.id: 1}
    return topics, qrels


def interpolation_curve(first: Run, second: Run, qrels, normalization: str = "minmax", metric: str = "ndcg@10",
                        alphas: Sequence[float] = tuple(i / 10 for i in range(11)), relevance_threshold: int = 1
                        ) -> dict[float, float]:
    """`metric` of interpolate(first, second, alpha) at each alpha."""
    from clsr.evaluate import evaluate

    return {alpha: round(evaluate(interpolate(first, second, alpha, normalization), qrels, [metric],
                                  relevance_threshold)[metric], 4) for alpha in alphas}


def best_alpha(curve: dict[float, float]) -> float:
    """The alpha with the best score; ties go to the alpha nearest 0.5 (the least extreme)."""
    return max(curve, key=lambda alpha: (curve[alpha], -abs(alpha - 0.5)))
