"""The evaluation stage's command: `clsr evaluate` (``python -m clsr.evaluate``). The work is in `clsr.evaluate`."""

from __future__ import annotations

import logging

from clsr.evaluate import DEFAULT_METRICS, coverage, coverage_note, evaluate, metric_function, read_run
from clsr.options import Command, UsageError

log = logging.getLogger(__name__)


def _add_evaluate_arguments(parser) -> None:
    parser.add_argument("--run", required=True, help="TREC or MS MARCO run file")
    parser.add_argument("--qrels", required=True, help="a qrels file (BEIR or TREC) or a BEIR folder / collection name")
    parser.add_argument("--split", default="test", help="for a BEIR folder: which qrels split (default test)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help="metrics as name@cutoff (ndcg, mrr, recall, precision)")
    parser.add_argument("--relevance-threshold", type=int, default=1,
                        help="lowest grade counted relevant by MRR and recall (2 for TREC DL19/DL20; nDCG uses grades)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _run_evaluate(args) -> None:
    import json

    from clsr.data import load_qrels

    for name in args.metrics:
        try:
            metric_function(name)
        except ValueError as e:
            raise UsageError(str(e)) from None
    run, qrels = read_run(args.run), load_qrels(args.qrels, args.split)
    scores = evaluate(run, qrels, args.metrics, args.relevance_threshold, qrels_name=args.qrels, run_name=args.run)
    counts = coverage(run, qrels)
    log.info("%s", coverage_note(counts))  # on stderr, so --json's output stays the metrics alone
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        print(f"{'num_q':<12} {counts.num_q}")  # as trec_eval names it
        for name, value in scores.items():
            print(f"{name:<12} {value:.4f}")


COMMAND = Command("evaluate", "Score a run file with trec_eval's semantics (as -c: averaged over all judged "
                              "queries, num_q): nDCG@10, MRR@10, R@100, R@1000 by default. Says on stderr how many "
                              "judged queries have no hits and how many run queries have no judgments.",
                  _add_evaluate_arguments, _run_evaluate)
