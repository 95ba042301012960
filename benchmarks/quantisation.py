"""What the impact bit width costs and buys: ranking quality against index size and build time.

    python benchmarks/quantisation.py --dataset scifact --dataset nfcorpus --out benchmarks/results/quantisation.json

For doc K 64 and 128, builds the concept index at several bit widths (documents: one fitted
scale, the 99.9th percentile of activations at the top impact; queries: 8 bits per query) and
compares it with the same codes scored exactly in float. Writes JSON and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from pathlib import Path

from harness import (
    build_baselines,
    build_concept_index_for,
    machine_info,
    sae_fidelity_runs,
    versions,
    write_report,
)

from clsr.data import load_qrels, load_topics, resolve
from clsr.evaluate import evaluate
from clsr.sae.model import TopKSae, default_sae_path
from clsr.search import ClsrSearcher, DenseSearcher

HERE = Path(__file__).resolve().parent
DEPTH = 1000
DOC_KS = (64, 128)
BITS = (2, 4, 6, 8, 9)
METRICS = ["ndcg@10", "recall@100"]


def measure(dataset: str, split: str, sae_path: Path) -> dict:
    source = resolve(dataset)
    name = Path(str(source)).name
    topics, qrels = load_topics(source, split), load_qrels(source, split)
    baselines = build_baselines(str(source), HERE / "work" / name)
    dense = DenseSearcher(baselines.dense_dir, encoder=baselines.encoder)
    sae = TopKSae.load_from_disk(sae_path)
    queries = baselines.encoder.encode_queries(list(topics.values()))
    documents = dense.index.reconstruct_n(0, dense.index.ntotal)
    rows = []
    for doc_k in DOC_KS:
        exact = evaluate(sae_fidelity_runs(sae, queries, documents, list(topics), dense.ids, doc_k, DEPTH,
                                           query_k=sae.config.k)[f"sparse_k{doc_k}"], qrels, METRICS)
        rows.append({"doc_k": doc_k, "bits": None, **{m: round(v, 4) for m, v in exact.items()}})
        for bits in BITS:
            index_dir = HERE / "work" / name / f"concepts-k{doc_k}-bits{bits}"
            manifest = build_concept_index_for(baselines, index_dir, sae_path, doc_k, bits=bits)
            run = (ClsrSearcher(index_dir, encoder=baselines.encoder.config)
                   .batch_search(topics, k=DEPTH, progress=False))
            timings = manifest.timings
            rows.append({"doc_k": doc_k, "bits": bits,
                         **{m: round(v, 4) for m, v in evaluate(run, qrels, METRICS).items()},
                         "index_bytes": manifest.lucene_bytes, "postings": manifest.postings,
                         "index_s": round(timings["concepts_s"] + timings["write_s"] + timings["lucene_s"], 2)})
            print(name, json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"dataset": name, "split": split, "rows": rows}


def markdown(result: dict) -> str:
    lines = ["# Impact bit width: quality against index size and time", "",
             "Documents: impact = clip(round(activation × scale), 1, 2^bits − 1), one scale fitted so the 99.9th "
             "percentile activation gets the top impact; queries: 8 bits, scaled per query. `float` is the same "
             "codes scored exactly.", ""]
    for data in result["datasets"]:
        lines += [f"## {data['dataset']} ({data['split']})", "",
                  "| doc K | bits | nDCG@10 | R@100 | index MB | index s |", "|---|---|---|---|---|---|"]
        for row in data["rows"]:
            if row["bits"] is None:
                lines.append(f"| {row['doc_k']} | float | {row['ndcg@10']:.4f} | {row['recall@100']:.4f} | | |")
            else:
                lines.append(f"| {row['doc_k']} | {row['bits']} | {row['ndcg@10']:.4f} | {row['recall@100']:.4f} "
                             f"| {row['index_bytes'] / 2**20:.2f} | {row['index_s']:.1f} |")
        lines.append("")
    machine, v = result["machine"], result["versions"]
    lines += [f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores). "
              f"Pyserini {v['pyserini']} (Anserini {v['anserini']}). Index s: SAE coding, writing the collection "
              "and Lucene indexing (one thread).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--sae", help="SAE folder (default: the bundled one)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sae_path = Path(args.sae) if args.sae else default_sae_path()
    result = {"measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "datasets": [measure(d, args.split, sae_path) for d in args.dataset],
              "machine": machine_info(), "versions": versions()}
    write_report(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
