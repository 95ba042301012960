"""The fusion stage's commands: `clsr fuse` (``python -m clsr.fusion``) and `clsr tune-alpha`, and the hybrid's
flags. The work is in `clsr.fusion`."""

from __future__ import annotations

import sys

from clsr.fusion import (
    DEFAULT_ALPHA,
    HYBRID_MODES,
    NORMALIZATIONS,
    QUERY_SIDES,
    RRF_K,
    HybridSearcher,
    best_alpha,
    fuse,
    pseudo_queries,
    record_alpha,
    tune_alpha,
)
from clsr.options import (
    Command,
    UsageError,
    add_concept_query_options,
    add_encoder_options,
    concept_encoder_options,
    positive_int,
)


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
    from clsr.evaluate import read_run, write_run
    from clsr.index.atomic import FILE, check_replaceable

    check_replaceable(args.output, FILE, {f"the run {path}": path for path in args.runs})
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

    from clsr.data import load_corpus, load_qrels, load_topics
    from clsr.index import read_manifest
    from clsr.sae.data import EVALUATION_SPLITS

    manifest = read_manifest(args.index)
    if args.pseudo_queries:
        corpus = args.corpus or manifest.source
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


def _add_tune_words_arguments(parser) -> None:
    parser.add_argument("--index", required=True, help="a concept index with words (clsr index's default)")
    parser.add_argument("--topics", required=True, help="a BEIR folder or collection name (topics and qrels)")
    parser.add_argument("--split", required=True, help="a train or dev split, e.g. train or dev")
    parser.add_argument("--metric", default="ndcg@10", help="metric to maximise (default ndcg@10)")
    parser.add_argument("--relevance-threshold", type=int, default=1)
    parser.add_argument("--record", action="store_true",
                        help="write the best W into the index's manifest, where searches take it unless told")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_encoder_options(parser, default_help="the index's")


def _run_tune_words(args) -> None:
    import json

    from clsr.data import load_qrels, load_topics
    from clsr.fusion import record_words_weight, tune_words_weight
    from clsr.index import read_manifest
    from clsr.sae.data import EVALUATION_SPLITS

    manifest = read_manifest(args.index)
    if manifest.kind != "concepts" or manifest.words is None:
        raise UsageError(f"{args.index} holds no words beside concepts: there is no words weight to tune")
    if args.split in EVALUATION_SPLITS:
        raise UsageError(f"refusing to tune on the {args.split!r} split: it is for reporting; tune on a train or "
                         "dev split")
    topics, qrels = load_topics(args.topics, args.split), load_qrels(args.topics, args.split)
    curve = tune_words_weight(args.index, topics, qrels, metric=args.metric,
                              relevance_threshold=args.relevance_threshold,
                              dtype=args.dtype, backend=args.encoder_backend)
    default = manifest.query.words_weight
    best = max(curve, key=lambda w: (curve[w], -abs(w - default)))  # ties go to the one nearest the default
    if args.record:
        record_words_weight(args.index, best)
        print(f"recorded words weight {best} in {args.index}'s manifest (was {default})", file=sys.stderr)
    if args.json:
        print(json.dumps({"metric": args.metric, "split": args.split, "curve": curve, "best": best,
                          "default": default}, indent=2))
        return
    print(f"{args.metric} on {args.topics} {args.split} ({len(topics)} queries), W = the words' weight "
          f"(0: concepts only; the index's default {default}):")
    for weight, value in curve.items():
        print(f"  W {weight:<4g} {value:.4f}  {'#' * round(value * 50)}{'  <- best' if weight == best else ''}")


TUNE_WORDS_COMMAND = Command(
    "tune-words-weight",
    "Evaluates the words' weight W beside the concepts in an index's one query (W = 0, 0.1, ..., 3) on a train or "
    "dev split, and with --record makes the best the index's default. Without judgments keep the default, which was "
    "chosen across collections (docs/concept-index.md, \"Words and concepts\").",
    _add_tune_words_arguments, _run_tune_words)


TUNE_ALPHA_COMMAND = Command(
    "tune-alpha",
    "Evaluates alpha = 0, 0.1, ..., 1 for the hybrid search of a concept index. Test-type splits (test, dev.small, "
    "dl19, dl20) are refused. With no tuning split, --pseudo-queries N draws N sentences or spans from the indexed "
    "corpus, each with its source passage as the one relevant document: no judgments are read.",
    _add_tune_arguments, _run_tune)
