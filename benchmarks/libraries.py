"""clsr's own evaluation and fusion against the libraries that could replace them, by numbers.

Evaluation: `clsr.evaluate.evaluate` against pytrec_eval (trec_eval's C code) on the same run and qrels.
Fusion: `clsr.fusion.fuse` (RRF and interpolation) against pyserini.fusion, file to file, on the same runs.
Both must agree exactly (the tests hold them to it); this measures speed. Runs are synthetic, 1,000
hits per query for SciFact's 300 test queries (its real qrels), with two-decimal scores, so ties occur.

    python benchmarks/libraries.py   # writes benchmarks/results/libraries.{json,md}
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clsr.data import load_corpus, load_qrels  # noqa: E402
from clsr.evaluate import evaluate, read_run, write_run  # noqa: E402
from clsr.fusion import fuse  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_run(qrels, docids, seed: int, depth: int = 1000) -> dict:
    rng = random.Random(seed)
    run = {}
    for qid, judged in qrels.items():
        hits = list(dict.fromkeys(list(judged) + rng.sample(docids, depth)))[:depth]
        run[qid] = [(docid, round(rng.random() * 10, 2)) for docid in hits]
    return run


def _same_but_boundary_ties(ours: dict, theirs: dict) -> bool:
    """Equal scores for every document both keep; documents only one keeps are tied at the cut (pyserini
    keeps the lower docids of such a tie, clsr the higher, by trec_eval's rule)."""
    if any(abs(ours[d] - theirs[d]) > 1e-5 for d in ours.keys() & theirs.keys()):
        return False
    cut = min(min(ours.values()), min(theirs.values()))
    return all(abs(ours.get(d, theirs.get(d)) - cut) < 1e-5 for d in ours.keys() ^ theirs.keys())


def best_of(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    import pytrec_eval
    from pyserini.fusion import interpolation, reciprocal_rank_fusion
    from pyserini.trectools import TrecRun

    work = Path(__file__).resolve().parent / "work" / "libraries"
    work.mkdir(parents=True, exist_ok=True)
    qrels = load_qrels("scifact", "test")
    docids = [d.id for d in load_corpus("scifact")]
    runs = [synthetic_run(qrels, docids, seed) for seed in (1, 2)]
    paths = [work / f"run{i}.trec" for i in (1, 2)]
    for run, path in zip(runs, paths):
        write_run(run, path)
    runs = [read_run(path) for path in paths]

    metrics = ["ndcg@10", "recall@100", "recall@1000"]
    ours = evaluate(runs[0], qrels, metrics)
    evaluator_measures = {"ndcg_cut.10", "recall.100", "recall.1000"}

    def with_pytrec_eval():
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, evaluator_measures)
        per_query = evaluator.evaluate({q: dict(h) for q, h in runs[0].items()})
        return {m: statistics.fmean(v[m] for v in per_query.values()) for m in ("ndcg_cut_10", "recall_100",
                                                                               "recall_1000")}

    theirs = with_pytrec_eval()
    assert all(abs(ours[a] - theirs[b]) < 1e-12 for a, b in zip(metrics, ("ndcg_cut_10", "recall_100",
                                                                         "recall_1000")))
    evaluation = {"clsr_s": best_of(lambda: evaluate(runs[0], qrels, metrics)),
                  "pytrec_eval_s": best_of(with_pytrec_eval)}

    fusion = {}
    for method in ("rrf", "interpolation"):
        def ours_fuse(method=method):
            fused = fuse([read_run(p) for p in paths], method, 0.5, "none", k=1000, depth=1000)
            write_run(fused, work / f"clsr-{method}.trec")

        def pyserini_fuse(method=method):
            trec_runs = [TrecRun(str(p)) for p in paths]
            fused = (reciprocal_rank_fusion(trec_runs, rrf_k=60, depth=1000, k=1000) if method == "rrf"
                     else interpolation(trec_runs, alpha=0.5, depth=1000, k=1000))
            fused.save_to_txt(str(work / f"pyserini-{method}.trec"), tag="pyserini")

        fusion[method] = {"clsr_s": best_of(ours_fuse, 3), "pyserini_fusion_s": best_of(pyserini_fuse, 3)}
        a, b = read_run(work / f"clsr-{method}.trec"), read_run(work / f"pyserini-{method}.trec")
        fusion[method]["same_scores"] = all(_same_but_boundary_ties(dict(a[q]), dict(b[q])) for q in a)

    result = {"queries": len(qrels), "hits_per_query": 1000, "evaluation": evaluation, "fusion": fusion,
              "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
              "versions": {"pytrec_eval": getattr(pytrec_eval, "__version__", "?")},
              "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "libraries.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# clsr's evaluation and fusion against pytrec_eval and pyserini.fusion", "",
             f"{len(qrels)} SciFact test queries, 1,000 synthetic hits each (two-decimal scores, so ties occur); "
             "best of 5 (evaluation) or 3 (fusion, file to file) in one run. The numbers agree exactly "
             "(asserted here and in tests/test_properties.py, tests/test_field_cases.py).", "",
             "| job | clsr (s) | library (s) | library |", "|---|---|---|---|",
             f"| nDCG@10, R@100, R@1000 | {evaluation['clsr_s']:.3f} | {evaluation['pytrec_eval_s']:.3f} | "
             "pytrec_eval |"]
    for method, row in fusion.items():
        lines.append(f"| fuse {method} (read, fuse, write) | {row['clsr_s']:.3f} | {row['pyserini_fusion_s']:.3f} "
                     f"| pyserini.fusion (same scores{' but at a tie at the cut' if row['same_scores'] else ': NO'}) |")
    lines += ["", f"Measured {result['measured']} on {result['machine']}."]
    (RESULTS / "libraries.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
