"""The query side of the concept index: quality and latency over query K and mode, at doc K 64 and 128.

    python benchmarks/query_k.py --dataset scifact --dataset nfcorpus --out benchmarks/results/query-k.json

For each collection and document K, one Lucene concept index is built, then searched with
``topk`` queries (the query's own top-K code) and ``projected`` queries (max(0, q . atom), the K
largest kept) at several K. BM25 is measured in the same run for the latency ratio. Latencies are
per query, one thread, top 1000, after a warm-up pass. Writes JSON and a markdown table beside it.
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
    concept_search_report,
    latencies_ms,
    machine_info,
    method_report,
    versions,
    write_report,
)

from clsr.data import load_qrels, load_topics, resolve
from clsr.sae.model import default_sae_path
from clsr.search import Bm25Searcher, ClsrSearcher

HERE = Path(__file__).resolve().parent
DEPTH = 1000
DOC_KS = (64, 128)
QUERY_SETTINGS = [("topk", 32), ("topk", 64), ("topk", 128), ("projected", 128), ("projected", 256),
                  ("projected", 512)]


def measure(dataset: str, split: str, sae_path: Path) -> dict:
    source = resolve(dataset)
    name = Path(str(source)).name
    topics, qrels = load_topics(source, split), load_qrels(source, split)
    baselines = build_baselines(str(source), HERE / "work" / name)
    bm25 = Bm25Searcher(baselines.bm25_dir)
    timings = latencies_ms(lambda q: bm25.search(q, DEPTH), list(topics.values()))
    rows = {"bm25": method_report(bm25.batch_search(topics, k=DEPTH), qrels, timings, baselines.bm25_dir)}
    for doc_k in DOC_KS:
        index_dir = HERE / "work" / name / f"concepts-k{doc_k}"
        build_concept_index_for(baselines, index_dir, sae_path, doc_k)
        for mode, query_k in QUERY_SETTINGS:
            searcher = ClsrSearcher(index_dir, query_k=query_k, query_mode=mode)
            rows[f"doc{doc_k}_{mode}{query_k}"] = concept_search_report(searcher, topics, qrels, DEPTH)
            print(f"{name} doc K={doc_k} {mode} {query_k}: " + json.dumps(rows[f"doc{doc_k}_{mode}{query_k}"]),
                  file=sys.stderr, flush=True)
    return {"dataset": name, "split": split, "queries": len(topics), "rows": rows}


def markdown(result: dict) -> str:
    lines = ["# Query K and mode: quality against latency", "",
             "One thread, top 1000, search alone (queries encoded beforehand) unless noted; ×BM25 is the "
             "search-alone p50 ratio to BM25 in the same run.", ""]
    for data in result["datasets"]:
        bm25 = data["rows"]["bm25"]
        lines += [f"## {data['dataset']} ({data['split']}, {data['queries']} queries)", "",
                  "| doc K | query | nDCG@10 | R@100 | search p50 ms | ×BM25 | p95 ms | top-10 p50 ms | e2e p50 ms "
                  "| encoding overhead |", "|---|---|---|---|---|---|---|---|---|---|",
                  f"| BM25 | | {bm25['ndcg@10']:.4f} | {bm25['recall@100']:.4f} | {bm25['search_ms_p50']:.2f} | 1.00 "
                  f"| {bm25['search_ms_p95']:.2f} | | | |"]
        for row in (r for n, r in data["rows"].items() if n != "bm25"):
            lines.append(
                f"| {row['doc_k']} | {row['query_mode']} {row['query_k']} | {row['ndcg@10']:.4f} "
                f"| {row['recall@100']:.4f} | {row['search_ms_p50']:.2f} "
                f"| {row['search_ms_p50'] / bm25['search_ms_p50']:.2f} | {row['search_ms_p95']:.2f} "
                f"| {row['search_ms_p50_top10']:.2f} | {row['e2e_ms_p50']:.2f} | {row['encoding_overhead']:+.1%} |")
        lines.append("")
    machine, v = result["machine"], result["versions"]
    lines += [f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores, "
              f"{machine['memory_gib']} GiB). clsr {v['clsr']}, Pyserini {v['pyserini']} (Anserini {v['anserini']}), "
              f"torch {v['torch']}. Encoding overhead: the query's concept encoding (dense + SAE + quantisation) "
              "against the dense encoding alone, p50 per query.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True, help="a BEIR folder or a name under $CLSR_DATA")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sae", help="SAE folder (default: the bundled one)")
    parser.add_argument("--out", required=True, help="JSON file to write; the .md table goes beside it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sae_path = Path(args.sae) if args.sae else default_sae_path()
    result = {"measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "datasets": [measure(d, args.split, sae_path) for d in args.dataset],
              "machine": machine_info(), "versions": versions()}
    write_report(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
