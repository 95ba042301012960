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
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from .evaluate import Run, trec_eval_order
from .options import Command, UsageError, add_concept_query_options, add_encoder_options, main_for, positive_int

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
    times the reconstruction the index build stored in ``doc_codes/``. ``rerank`` rescores the
    sparse top-``depth`` candidates (no dense index needed); ``full`` searches all reconstructions
    exactly (FAISS flat) and fuses the two top-``depth`` lists. Other options go to ClsrSearcher.

    ``sparse`` is a ready concept searcher instead of ``index_dir``: e.g. a
    ``clsr.milvus.MilvusSearcher``, whose collection serves the reconstructions and, in ``full``
    mode, their exact search; the fusion is clsr's either way.
    """

    def __init__(self, index_dir: str | os.PathLike | None = None, *, mode: str = "rerank",
                 query_side: str = "original", method: str = "interpolation", alpha: float | None = None,
                 normalization: str = "minmax", depth: int = 1000, sparse=None, **options):
        from .search import ClsrSearcher

        if mode not in HYBRID_MODES or query_side not in QUERY_SIDES:
            raise ValueError(f"mode must be one of {HYBRID_MODES} and query_side one of {QUERY_SIDES}")
        if (index_dir is None) == (sparse is None):
            raise ValueError("give either an index folder or a concept searcher (sparse=...)")
        fuse([{}, {}], method, DEFAULT_ALPHA if alpha is None else alpha, normalization)  # validates them up front
        self.sparse = sparse if sparse is not None else ClsrSearcher(index_dir, **options)
        if alpha is None:  # the alpha tuned when the index was built (or later by `clsr tune-alpha --record`)
            alpha = recorded_alpha(getattr(self.sparse, "manifest", {}), where=index_dir or "the collection")
        self.mode, self.query_side, self.depth = mode, query_side, depth
        self.method, self.alpha, self.normalization = method, alpha, normalization
        self._faiss = None
        if mode == "full" and hasattr(self.sparse, "dense_search"):
            pass  # the backend searches its reconstructions itself (Milvus: FLAT, exact)
        elif mode == "full":
            self.reconstructed = np.ascontiguousarray(self.sparse.doc_codes.reconstructed, dtype=np.float32)
            import faiss

            self._faiss = faiss.IndexFlatIP(self.reconstructed.shape[1])
            self._faiss.add(self.reconstructed)

    def query_vectors(self, embeddings: np.ndarray) -> np.ndarray:
        """The dense side's query vectors; steering moves them along the decoder's concept directions."""
        from .concepts import steer_codes  # here, not at import: `clsr fuse` needs no torch

        encoder = self.sparse.concept_encoder
        if self.query_side == "original":
            return encoder.steer_embeddings(embeddings)
        values, indices = encoder.sae.encode_numpy(embeddings, min(encoder.query_k, encoder.sae.config.k))
        return encoder.sae.decode_numpy(*steer_codes(values, indices, encoder.steering))

    def component_runs(self, queries: Mapping[str, str], threads: int = 1, batch_size: int = 1,
                       progress: bool | None = None) -> tuple[Run, Run]:
        """The sparse run and the dense-reconstruction run, each `depth` deep, before fusion."""
        qids = list(queries)
        with self.sparse.query_encoder.encoded([queries[q] for q in qids], progress=bool(progress)) as embeddings:
            sparse = self.sparse.batch_search(queries, k=self.depth, threads=threads, batch_size=batch_size,
                                              progress=progress)
        vectors = self.query_vectors(embeddings)
        dense: Run = {}
        if self.mode == "full" and self._faiss is None:
            for qid, hits in zip(qids, self.sparse.dense_search(vectors, self.depth)):
                dense[qid] = trec_eval_order(hits) if queries[qid].strip() else []
        elif self.mode == "full":
            scores, rows = self._faiss.search(np.ascontiguousarray(vectors, np.float32),
                                              min(self.depth, len(self.reconstructed)))
            ids = self.sparse.doc_codes.ids
            for qid, row_scores, row_ids in zip(qids, scores, rows):
                dense[qid] = (trec_eval_order((ids[r], float(s)) for r, s in zip(row_ids, row_scores) if r >= 0)
                              if queries[qid].strip() else [])
        else:
            for qid, vector in zip(qids, vectors):
                docids = [docid for docid, _ in sparse[qid]]
                scores = self.sparse.reconstructions(docids) @ vector if docids else []
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


def recorded_alpha(manifest: Mapping, where: object = "the index") -> float:
    """The hybrid alpha a concept index's manifest records (``hybrid_alpha``, tuned on pseudo-queries at build
    time), or DEFAULT_ALPHA with a warning for an index built before that, naming the command that tunes it."""
    record = manifest.get("hybrid_alpha")
    if record is not None:
        return float(record["alpha"])
    log.warning("%s records no tuned hybrid alpha: using %s; tune it with `clsr tune-alpha --index ... "
                "--pseudo-queries %d --record` (no judgments needed)", where, DEFAULT_ALPHA, PSEUDO_QUERIES)
    return DEFAULT_ALPHA


def tune_and_record_alpha(index_dir: str | os.PathLike, documents: Sequence, n: int = PSEUDO_QUERIES, seed: int = 0,
                          metric: str = "ndcg@10", **options) -> dict:
    """Tune the hybrid's alpha of a concept index on ``n`` pseudo-queries drawn from ``documents`` (its corpus;
    :func:`pseudo_queries`, no judgments) and record it in the index's manifest as ``hybrid_alpha``:
    {"alpha", "metric", "tuned_on", "curve"}. Returns that record. ``options`` go to :class:`HybridSearcher`
    (encoder settings). Source of the method: issue 10's pseudo-queries; benchmarks/results/transfer.md
    compares the alpha they pick with a real split's."""
    topics, qrels = pseudo_queries(documents, n, seed=seed)
    searcher = HybridSearcher(index_dir, alpha=DEFAULT_ALPHA, **options)
    curve = tune_alpha(searcher, topics, qrels, metric=metric)
    return record_alpha(index_dir, curve, metric, f"{len(topics)} pseudo-queries, seed {seed}")


def record_alpha(index_dir: str | os.PathLike, curve: Mapping[float, float], metric: str, tuned_on: str) -> dict:
    """Write the best alpha of ``curve`` (alpha -> metric) into the index's manifest as ``hybrid_alpha``:
    {"alpha", "metric", "tuned_on", "curve"}, which searchers use when no alpha is given. Returns that record."""
    from .index import update_manifest

    record = {"alpha": best_alpha(curve), "metric": metric, "tuned_on": tuned_on,
              "curve": {f"{alpha:.1f}": value for alpha, value in curve.items()}}
    update_manifest(index_dir, hybrid_alpha=record)
    return record


def pseudo_queries(documents: Sequence, n: int = 300, seed: int = 0, min_words: int = 6,
                   max_words: int = 16) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Self-supervised tuning topics drawn from the corpus itself: (topics, qrels), no judgments read.

    For `n` passages drawn at random (of those with at least `min_words` words), the query is one
    of their sentences of `min_words`..`max_words` words if they have any, else a random span of
    that length, and the source passage is its one relevant document. Such queries stand in for a
    tuning split where there is none, as the spans do for the SAE's KL terms (issue 10).
    """
    from .sae_data import random_spans, split_sentences

    rng = np.random.default_rng(seed)
    candidates = [d for d in documents if len(d.text.split()) >= min_words]
    topics: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for row in rng.permutation(len(candidates))[:n]:
        doc = candidates[row]
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
    from .evaluate import evaluate

    return {alpha: round(evaluate(interpolate(first, second, alpha, normalization), qrels, [metric],
                                  relevance_threshold)[metric], 4) for alpha in alphas}


def best_alpha(curve: dict[float, float]) -> float:
    """The alpha with the best score; ties go to the alpha nearest 0.5 (the least extreme)."""
    return max(curve, key=lambda alpha: (curve[alpha], -abs(alpha - 0.5)))


# -- the command line: `clsr fuse` (= `python -m clsr.fusion`) and `clsr tune-alpha`, and the hybrid's flags --

def add_hybrid_options(parser, tuning: bool = False) -> None:
    """The hybrid's flags, for `clsr search`, `clsr tune-alpha` (``tuning``: no --alpha) and `clsr serve`."""
    group = parser.add_argument_group("hybrid (concept index + dense scores of reconstructed documents)")
    if not tuning:
        group.add_argument("--hybrid", action="store_true", help="fuse the concept search with dense scores")
        group.add_argument("--fusion", choices=["interpolation", "rrf"], default="interpolation",
                           help="default interpolation")
        group.add_argument("--alpha", type=float, default=None,
                           help="weight of the sparse run in the interpolation (default: the alpha tuned on "
                                "pseudo-queries when the index was built, recorded in its manifest; "
                                f"{DEFAULT_ALPHA} for an index without one)")
    group.add_argument("--normalization", choices=list(NORMALIZATIONS), default="minmax",
                       help="per-query score normalisation before interpolation (default minmax)")
    group.add_argument("--hybrid-mode", choices=list(HYBRID_MODES), default="rerank",
                       help="rerank: rescore the sparse top --depth; full: also search all reconstructions")
    group.add_argument("--hybrid-query", choices=list(QUERY_SIDES), default="original",
                       help="the query embedding for the dense score: as encoded, or through the SAE")
    group.add_argument("--depth", type=positive_int, default=1000, help="hits per component run (default 1000)")


def _add_fuse_arguments(parser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, help="TREC run files (interpolation: exactly two)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--method", choices=["interpolation", "rrf"], default="rrf",
                        help="default rrf (any number of runs)")
    parser.add_argument("--alpha", type=float, default=0.5, help="interpolation weight of the first run (default 0.5)")
    parser.add_argument("--normalization", choices=list(NORMALIZATIONS), default="minmax",
                        help="per-query score normalisation before interpolation (default minmax; none: raw "
                             "scores, a missing document adds 0, as pyserini.fusion's interpolation)")
    parser.add_argument("--depth", type=positive_int, default=1000,
                        help="hits per query read from each run (default 1000, as pyserini.fusion)")
    parser.add_argument("--rrf-k", type=int, default=RRF_K, help=f"RRF constant (default {RRF_K})")
    parser.add_argument("--hits", type=positive_int, default=1000, help="hits per query in the output (default 1000)")
    parser.add_argument("--run-tag", default="clsr-fusion")


def _run_fuse(args) -> None:
    from .evaluate import read_run, write_run

    runs = [read_run(path) for path in args.runs]
    fused = fuse(runs, args.method, args.alpha, args.normalization, args.rrf_k, k=args.hits, depth=args.depth)
    write_run(fused, args.output, tag=args.run_tag)
    print(f"fused {len(runs)} runs ({args.method}) into {args.output}: {len(fused)} queries")


COMMAND = Command("fuse", "Fuses TREC run files from clsr or Pyserini (BM25, SPLADE, dense); the output is a TREC "
                          "run that python -m pyserini.fusion and trec_eval read.",
                  _add_fuse_arguments, _run_fuse)


def _add_tune_arguments(parser) -> None:
    parser.add_argument("--index", required=True, help="a concept index")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--topics", help="a BEIR folder or collection name (topics and qrels)")
    what.add_argument("--pseudo-queries", type=positive_int, metavar="N",
                      help="tune on N pseudo-queries from the corpus")
    parser.add_argument("--split", help="with --topics: a train or dev split, e.g. train or dev")
    parser.add_argument("--corpus",
                        help="with --pseudo-queries: the corpus (default: the one the index was built from)")
    parser.add_argument("--seed", type=int, default=0, help="pseudo-query sampling seed")
    parser.add_argument("--metric", default="ndcg@10", help="metric to maximise (default ndcg@10)")
    parser.add_argument("--relevance-threshold", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--record", action="store_true",
                        help="write the best alpha into the index's manifest, where `clsr search --hybrid` and "
                             "`clsr serve` take it when no --alpha is given (clsr index does this on pseudo-queries)")
    add_concept_query_options(parser)
    add_hybrid_options(parser, tuning=True)
    add_encoder_options(parser, default_help="the index's")


def _run_tune(args) -> None:
    import json

    from .data import load_corpus, load_qrels, load_topics
    from .index import concept_encoder_options, read_manifest
    from .sae_data import EVALUATION_SPLITS

    manifest = read_manifest(args.index)
    if args.pseudo_queries:
        corpus = args.corpus or manifest.get("source")
        if not corpus:
            raise UsageError("the index does not record its corpus; pass --corpus")
        topics, qrels = pseudo_queries(load_corpus(corpus), args.pseudo_queries, seed=args.seed)
        where = f"{len(topics)} pseudo-queries from {corpus}"
    else:
        if args.split is None:
            raise UsageError("--topics needs --split (a train or dev split)")
        if args.split in EVALUATION_SPLITS:
            raise UsageError(f"refusing to tune on the {args.split!r} split: it is for reporting; tune on a train or "
                             "dev split, or on --pseudo-queries")
        topics, qrels = load_topics(args.topics, args.split), load_qrels(args.topics, args.split)
        where = f"{args.topics} {args.split} ({len(topics)} queries)"
    searcher = HybridSearcher(args.index, mode=args.hybrid_mode, query_side=args.hybrid_query,
                              normalization=args.normalization, depth=args.depth,
                              **concept_encoder_options(args, manifest))
    curve = tune_alpha(searcher, topics, qrels, metric=args.metric, relevance_threshold=args.relevance_threshold)
    best = best_alpha(curve)
    if args.record:
        record_alpha(args.index, curve, args.metric, where)
        print(f"recorded alpha {best} in {args.index}'s manifest", file=sys.stderr)
    if args.json:
        print(json.dumps({"metric": args.metric, "tuned_on": where, "curve": curve, "best_alpha": best}, indent=2))
        return
    print(f"{args.metric} on {where}, alpha = weight of the sparse run:")
    for alpha, value in curve.items():
        print(f"  alpha {alpha:.1f}  {value:.4f}  {'#' * round(value * 50)}{'  <- best' if alpha == best else ''}")


TUNE_ALPHA_COMMAND = Command(
    "tune-alpha",
    "Evaluates alpha = 0, 0.1, ..., 1 for the hybrid search of a concept index. Test-type splits (test, dev.small, "
    "dl19, dl20) are refused. With no tuning split, --pseudo-queries N draws N sentences or spans from the indexed "
    "corpus, each with its source passage as the one relevant document: no judgments are read.",
    _add_tune_arguments, _run_tune)


def main(argv: Sequence[str] | None = None) -> None:
    main_for(COMMAND, argv, prog="python -m clsr.fusion")


if __name__ == "__main__":
    main()
