"""Controllability: amplify one concept per query and watch MRR@10 and P@10 (the seed paper's study).

    python benchmarks/control.py --dataset scifact --dataset nfcorpus --out benchmarks/results/control.json

For each test query, one of its own concepts is amplified: its weight times (1 + a), for a = 0
(no change) and a grid that starts at 1/8 and doubles up to 16. Which concept:

* **train-chosen** (the reported setting): on the *train* queries, count how often each concept is
  the one most activated by a query's relevant documents; for a test query, amplify the query
  concept with the highest count. Test qrels are never looked at to choose.
* **oracle** (an upper bound, not a result): the concept most activated by the test query's own
  relevant documents. Choosing with test qrels is an oracle, and is labelled so.

Query side: the query's code is edited and re-quantised (`clsr.index.concepts.steer_codes`), then
searched in Lucene. Document side: the top 1000 of the unedited query are rescored with the chosen
concept's document weight times (1 + a). In exact arithmetic the two sides are the same product;
they differ because the query side is re-quantised per query (the boosted weight is capped at
255 and every other weight shrinks), and because the document side cannot reach beyond the
unedited top 1000.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import Counter
from pathlib import Path

from harness import build_baselines, build_concept_index_for, machine_info, versions, write_report

from clsr.data import load_qrels, load_topics, resolve
from clsr.evaluate import evaluate
from clsr.index.concepts import impact_vectors, steer_codes
from clsr.sae.model import default_sae_path
from clsr.search import ClsrSearcher

HERE = Path(__file__).resolve().parent
DOC_K = 64
AMPLIFICATIONS = [0.0] + [2.0 ** e for e in range(-3, 5)]  # 0, 1/8, 1/4, ..., 16
METRICS = ["mrr@10", "precision@10"]
DEPTH = 1000


def relevant_top_concept(searcher: ClsrSearcher, judged: dict[str, int]) -> int | None:
    """The concept with the largest summed activation over a query's relevant documents."""
    totals: Counter = Counter()
    for docid, grade in judged.items():
        if grade > 0 and docid in searcher.doc_codes._rows:
            activations, latents = searcher.doc_codes.code(docid)
            totals.update({int(l): float(a) for l, a in zip(latents, activations) if a > 0})
    return totals.most_common(1)[0][0] if totals else None


def chosen_concepts(searcher, topics, query_codes, qrels, prior: Counter | None) -> dict[str, int]:
    chosen = {}
    for (qid, _), (values, indices) in zip(topics.items(), query_codes):
        own = [int(l) for l, v in zip(indices, values) if v > 0]
        if prior is None:  # oracle: the test query's own relevant documents
            concept = relevant_top_concept(searcher, qrels.get(qid, {}))
        else:
            concept = max(own, key=lambda l: (prior[l], -own.index(l))) if own else None
        if concept is not None:
            chosen[qid] = concept
    return chosen


def measure(dataset: str) -> dict:
    source = resolve(dataset)
    name = Path(str(source)).name
    baselines = build_baselines(str(source), HERE / "work" / name)
    index_dir = HERE / "work" / name / f"concepts-k{DOC_K}"
    build_concept_index_for(baselines, index_dir, default_sae_path(), DOC_K, reuse=True)
    searcher = ClsrSearcher(index_dir, encoder=baselines.encoder.config)
    encoder = searcher.concept_encoder
    topics, qrels = load_topics(source, "test"), load_qrels(source, "test")
    train_qrels = load_qrels(source, "train")
    prior = Counter(c for c in (relevant_top_concept(searcher, judged) for judged in train_qrels.values())
                    if c is not None)
    embeddings = encoder.dense.encode_queries(list(topics.values()))
    values, indices = encoder.query_codes(embeddings)
    query_codes = list(zip(values, indices))
    base_vectors = impact_vectors(values, indices, encoder.query_quantizer)
    base_run = {qid: searcher.search_vector(vector, DEPTH) for qid, vector in zip(topics, base_vectors)}
    result = {"dataset": name, "train_queries_with_a_concept": sum(prior.values()), "settings": {}}
    for setting, setting_prior in (("train-chosen", prior), ("oracle (test qrels)", None)):
        chosen = chosen_concepts(searcher, topics, query_codes, qrels, setting_prior)
        curve = []
        for a in AMPLIFICATIONS:
            query_run, doc_run = {}, {}
            for (qid, _text), vector, (v, i) in zip(topics.items(), base_vectors, query_codes):
                concept = chosen.get(qid)
                if concept is None or a == 0:
                    query_run[qid] = doc_run[qid] = base_run[qid]
                    continue
                steered = impact_vectors(*steer_codes(v[None], i[None], {concept: 1 + a}), encoder.query_quantizer)[0]
                query_run[qid] = searcher.search_vector(steered, DEPTH)
                doc_run[qid] = searcher.rescore_with_doc_steering(vector, base_run[qid], {concept: 1 + a})
            curve.append({"amplification": a,
                          "query_side": {m: round(v, 4) for m, v in evaluate(query_run, qrels, METRICS).items()},
                          "doc_side": {m: round(v, 4) for m, v in evaluate(doc_run, qrels, METRICS).items()}})
            print(name, setting, json.dumps(curve[-1]), file=sys.stderr, flush=True)
        result["settings"][setting] = {"queries_steered": len(chosen), "curve": curve}
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(result["datasets"]), 2, figsize=(11, 4 * len(result["datasets"])), squeeze=False)
    for row, data in enumerate(result["datasets"]):
        for column, metric in enumerate(METRICS):
            axis = axes[row][column]
            for setting, style in (("train-chosen", "-"), ("oracle (test qrels)", ":")):
                curve = data["settings"][setting]["curve"]
                xs = [max(point["amplification"], 1 / 16) for point in curve]
                for side, colour in (("query_side", "tab:red"), ("doc_side", "tab:blue")):
                    axis.plot(xs, [point[side][metric] for point in curve], style, marker="o", color=colour,
                              label=f"{setting}, {side.replace('_', ' ')}")
            axis.set_xscale("log", base=2)
            axis.set_xlabel("amplification a (weight x (1 + a); leftmost point: a = 0)")
            axis.set_ylabel(metric)
            axis.set_title(f"{data['dataset']}: {metric}")
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(result: dict) -> str:
    lines = ["# Controllability: amplifying one concept per query", "",
             "Weight of the chosen concept times (1 + a). **train-chosen**: the query concept most often the top "
             "concept of relevant documents on the *train* split (test qrels unused). **oracle**: chosen with the "
             "test query's own relevant documents — an upper bound, not a result.", ""]
    for data in result["datasets"]:
        for setting, body in data["settings"].items():
            lines += [f"## {data['dataset']}, {setting} ({body['queries_steered']} queries steered)", "",
                      "| a | query side MRR@10 | P@10 | doc side MRR@10 | P@10 |", "|---|---|---|---|---|"]
            for point in body["curve"]:
                q, d = point["query_side"], point["doc_side"]
                lines.append(f"| {point['amplification']:g} | {q['mrr@10']:.4f} | {q['precision@10']:.4f} "
                             f"| {d['mrr@10']:.4f} | {d['precision@10']:.4f} |")
            lines.append("")
    machine = result["machine"]
    lines += ["Plot: [control.png](control.png).", "",
              f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores); concept index K={DOC_K}, "
              f"query K 128, top {DEPTH}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True, help="collections with train and test qrels")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    result = {"measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "datasets": [measure(d) for d in args.dataset], "machine": machine_info(), "versions": versions()}
    write_report(result, out, markdown(result))
    plot(result, out.with_name("control.png"))


if __name__ == "__main__":
    main()
