"""Concept search on the engines people use, side by side in one run: Lucene (exact, as today), Lucene with a
pruned query (its strongest concepts only), BMP and Seismic (both rescored exactly by clsr), against BM25.

For each collection (SciFact, NFCorpus; the bundled general-English SAE, zero-shot; doc K = the SAE's K, the
default) and each engine setting:
* p50/p95 latency at top 10 and top 1000, one query at a time on one thread, queries encoded beforehand
  (query encoding is reported apart: it is the same for every engine);
* recall@10 and @1000 against Lucene's exact run, nDCG@10 against the qrels;
* index size and build time;
* where the time goes: the share of the index's postings a concept query touches, and the time an exact
  scan of them needs at the machine's memory bandwidth (the physical reference for an exhaustive engine).

Usage: python benchmarks/engines.py [--datasets scifact nfcorpus] [--out benchmarks/results/engines.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import (
    build_baselines,
    build_concept_index_for,
    latencies_ms,
    machine_info,
    percentile,
    versions,
    write_report,
)

from clsr.data import load_qrels, load_topics
from clsr.evaluate import evaluate
from clsr.index import directory_bytes
from clsr.index.words import is_word_term
from clsr.sae.model import default_sae_path, sae_relation
from clsr.search import Bm25Searcher, ClsrSearcher, ranked
from clsr.search.engines import EngineConfig

SETTINGS = [  # (label, engine config or None for Lucene, query K or None for the index's)
    ("Lucene (exact)", None, None),
    ("Lucene, query pruned to 64 concepts", None, 64),
    ("Lucene, query pruned to 32 concepts", None, 32),
    ("BMP (alpha=beta=1, 1000 candidates)", EngineConfig("bmp", depth=1000), None),
    ("BMP (alpha=beta=1, k candidates)", EngineConfig("bmp"), None),
    ("Seismic (cut 64, heap 0.9, 1000 candidates)", EngineConfig("seismic", depth=1000, query_cut=64,
                                                               heap_factor=0.9), None),
    ("Seismic (cut 32, heap 0.8, 100 candidates)", EngineConfig("seismic", depth=100), None),
    ("Seismic default (cut 32, heap 0.8, k candidates)", EngineConfig("seismic"), None),
    ("Seismic (cut 16, heap 0.7, k candidates)", EngineConfig("seismic", query_cut=16, heap_factor=0.7), None),
]


def memory_bandwidth_gb_s(size_mb: int = 256, repeats: int = 5) -> float:
    """Single-thread read bandwidth: the best of ``repeats`` sums over a buffer far larger than the caches."""
    data = np.ones(size_mb * 2**20 // 8, np.float64)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


def postings_touched(searcher: ClsrSearcher, vectors: list[dict[str, int]]) -> dict:
    """The share of the index's concept postings a query's concepts touch (their document frequencies' sum; its
    words, in an index with words, are left out)."""
    codes = searcher.doc_codes
    impacts = searcher.concept_encoder.doc_quantizer.quantize(np.asarray(codes.activations, np.float32))
    n_latents = searcher.concept_encoder.sae.config.n_latents
    df = np.bincount(np.asarray(codes.latents, np.int64)[impacts > 0], minlength=n_latents)
    touched = [int(sum(df[int(t[1:])] for t in v if not is_word_term(t))) for v in vectors]
    return {"postings": int(df.sum()), "touched_p50": percentile(touched, 0.5),
            "touched_share_p50": round(percentile(touched, 0.5) / df.sum(), 4),
            "touched_share_p95": round(percentile(touched, 0.95) / df.sum(), 4)}


def recall(run: dict, exact: dict, depth: int) -> float:
    hit = total = 0
    for qid, hits in exact.items():
        wanted = {h.docid for h in hits[:depth]}
        hit += len(wanted & {h.docid for h in run.get(qid, [])[:depth]})
        total += len(wanted)
    return round(hit / max(total, 1), 4)


def measure_setting(index_dir: Path, label: str, engine: EngineConfig | None, query_k: int | None, topics: dict,
                    qrels, exact: dict | None) -> tuple[dict, dict]:
    start = time.perf_counter()
    searcher = ClsrSearcher(index_dir, dtype="fp32", engine=engine, query_k=query_k)
    open_s = time.perf_counter() - start
    texts = list(topics.values())
    vectors = [dict(v) for v in searcher.concept_encoder.encode_queries(texts)]
    if engine is None:
        searcher.query_encoder.prime(texts)
        top = {k: latencies_ms(lambda q, k=k: searcher.impact_searcher.search(q, k), texts) for k in (10, 1000)}
        run = {qid: ranked(searcher.impact_searcher.search(text, 1000)) for qid, text in topics.items()}
        engine_bytes = 0
    else:
        top = {k: latencies_ms(lambda v, k=k: searcher.engine_search(v, k), vectors) for k in (10, 1000)}
        run = {qid: searcher.engine_search(v, 1000) for qid, v in zip(topics, vectors)}
        engine_bytes = sum(directory_bytes(p) for p in (index_dir / "engines").iterdir()
                           if p.is_dir() and not p.name.startswith("."))
    exact = exact if exact is not None else run
    report = {
        "setting": label, "ms_p50_top10": round(percentile(top[10], 0.5), 3),
        "ms_p95_top10": round(percentile(top[10], 0.95), 3), "ms_p50_top1000": round(percentile(top[1000], 0.5), 3),
        "ms_p95_top1000": round(percentile(top[1000], 0.95), 3),
        "recall@10": recall(run, exact, 10), "recall@1000": recall(run, exact, 1000),
        "ndcg@10": round(evaluate({q: [(h.docid, h.score) for h in hits] for q, hits in run.items()}, qrels,
                                  ["ndcg@10"])["ndcg@10"], 4),
        "engine_bytes": engine_bytes, "open_or_build_s": round(open_s, 2),
    }
    return report, run


MILVUS_SETTINGS = [  # (inverted_index_algo, search params)
    ("TAAT_NAIVE", {}), ("DAAT_MAXSCORE", {}), ("DAAT_WAND", {}), ("DAAT_MAXSCORE", {"drop_ratio_search": 0.2}),
]


def measure_milvus(index_dir: Path, work: Path, topics: dict, qrels, exact: dict) -> list[dict]:
    """Milvus Lite with each sparse index algorithm (and a query drop ratio): the same rows as the Lucene ones."""
    try:
        from clsr.search.milvus import MilvusSearcher, export_index
    except ImportError:
        return []
    uri = str(work / "milvus.db")
    rows = []
    texts = list(topics.values())
    for algo, params in MILVUS_SETTINGS:
        collection = f"concepts_{algo.lower()}"
        start = time.perf_counter()
        try:
            export_index(index_dir, uri, collection, overwrite=True, progress=False, inverted_index_algo=algo)
        except Exception as e:  # an algorithm this Milvus Lite lacks: said in the report, not fatal
            rows.append({"setting": f"Milvus Lite {algo} {params}", "error": f"{type(e).__name__}: {e}"[:200]})
            continue
        build_s = time.perf_counter() - start
        searcher = MilvusSearcher(uri, collection, search_params=params, dtype="fp32")
        vectors = [searcher.query_encoder.concept_encoder.encode_queries([t])[0] for t in texts]
        top = {k: latencies_ms(lambda v, k=k, s=searcher: s.search_vector(v, k), vectors) for k in (10, 1000)}
        run = {qid: searcher.search_vector(v, 1000) for qid, v in zip(topics, vectors)}
        rows.append({
            "setting": f"Milvus Lite {algo}" + (f" {params}" if params else ""),
            "ms_p50_top10": round(percentile(top[10], 0.5), 3), "ms_p95_top10": round(percentile(top[10], 0.95), 3),
            "ms_p50_top1000": round(percentile(top[1000], 0.5), 3),
            "ms_p95_top1000": round(percentile(top[1000], 0.95), 3),
            "recall@10": recall(run, exact, 10), "recall@1000": recall(run, exact, 1000),
            "ndcg@10": round(evaluate({q: [(h.docid, h.score) for h in hits] for q, hits in run.items()}, qrels,
                                      ["ndcg@10"])["ndcg@10"], 4),
            "engine_bytes": 0, "open_or_build_s": round(build_s, 2)})
    return rows


def run_dataset(dataset: str, work: Path, words: bool = False) -> dict:
    """Every engine setting on one collection's concept index (with ``words``, the default words + concepts
    index, at its recorded words weight), recall against Lucene's exact run of the same index."""
    baselines = build_baselines(dataset, work / dataset)
    sae = default_sae_path()
    doc_k = 128
    index_dir = work / dataset / f"{'words-' if words else ''}concepts-k{doc_k}"
    manifest = build_concept_index_for(baselines, index_dir, sae, doc_k=doc_k, reuse=True, words=words)
    shutil.rmtree(index_dir / "engines", ignore_errors=True)  # engine build times are measured here
    topics, qrels = load_topics(baselines.source, "test"), load_qrels(baselines.source, "test")
    bm25 = Bm25Searcher(baselines.bm25_dir)
    texts = list(topics.values())
    bm25_ms = {k: latencies_ms(lambda q, k=k: bm25.search(q, k), texts) for k in (10, 1000)}
    rows, exact = [], None
    for label, engine, query_k in SETTINGS:
        report, run = measure_setting(index_dir, label, engine, query_k, topics, qrels, exact)
        exact = exact if exact is not None else run
        report["vs_bm25_p50_top10"] = round(report["ms_p50_top10"] / percentile(bm25_ms[10], 0.5), 3)
        report["vs_bm25_p50_top1000"] = round(report["ms_p50_top1000"] / percentile(bm25_ms[1000], 0.5), 3)
        rows.append(report)
        print(dataset, report)
    for report in measure_milvus(index_dir, work / dataset, topics, qrels, exact):
        if "error" not in report:
            report["vs_bm25_p50_top10"] = round(report["ms_p50_top10"] / percentile(bm25_ms[10], 0.5), 3)
            report["vs_bm25_p50_top1000"] = round(report["ms_p50_top1000"] / percentile(bm25_ms[1000], 0.5), 3)
        rows.append(report)
        print(dataset, report)
    lucene = ClsrSearcher(index_dir, dtype="fp32")
    rerank = rerank_and_explain_ms(lucene, topics, exact)
    touched = postings_touched(lucene, [dict(v) for v in lucene.concept_encoder.encode_queries(texts)])
    encode_ms = latencies_ms(lambda q: lucene.concept_encoder.encode_queries([q]), texts[:100])
    return {"dataset": dataset, "documents": manifest.documents, "queries": len(topics), "doc_k": doc_k,
            "terms": "words + concepts" if words else "concepts",
            "sae": sae.name, "sae_relation": sae_relation(sae, dataset),
            "lucene_bytes": manifest.lucene_bytes, "doc_codes_bytes": manifest.doc_codes_bytes,
            "bm25_bytes": directory_bytes(baselines.bm25_dir),
            "bm25_ms_p50_top10": round(percentile(bm25_ms[10], 0.5), 3),
            "bm25_ms_p50_top1000": round(percentile(bm25_ms[1000], 0.5), 3),
            "query_encode_ms_p50": round(percentile(encode_ms, 0.5), 3), "postings": touched, "settings": rows,
            **rerank}


def rerank_and_explain_ms(searcher: ClsrSearcher, topics: dict, exact: dict) -> dict:
    """What deriving from the compact doc_codes/ costs a query: the hybrid's dense scores of the top 1000 from
    their codes, against clsr 0.1's stored float32 embeddings (held in memory here), and an explanation
    (shared concepts with their weights) of each of the top 10."""
    texts = list(topics.values())
    vectors = searcher.concept_encoder.dense.encode_queries(texts)
    candidates = [[h.docid for h in exact[q][:1000]] for q in topics]
    stored = searcher.doc_codes.decoded(slice(None), searcher.concept_encoder.sae)  # clsr 0.1's store
    row = searcher.doc_codes.row
    derived = latencies_ms(lambda i: searcher.reconstruction_scores(candidates[i], vectors[i]), range(len(texts)))
    old = latencies_ms(lambda i: stored[[row(d) for d in candidates[i]]] @ vectors[i], range(len(texts)))
    query_vectors = [dict(v) for v in searcher.concept_encoder.encode_queries(texts)]
    explain = latencies_ms(lambda i: [searcher.shared_concepts(query_vectors[i], d) for d in candidates[i][:10]],
                           range(len(texts)))
    return {"rerank1000_ms_p50_derived": round(percentile(derived, 0.5), 3),
            "rerank1000_ms_p50_stored": round(percentile(old, 0.5), 3),
            "explain10_ms_p50": round(percentile(explain, 0.5), 3)}


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [f"# Concept search engines ({machine['cpu']}; {machine['cpu_kind']}; flags "
             f"{', '.join(machine['cpu_flags']) or 'none of avx512/amx'})",
             "", f"One query at a time, one thread, queries encoded beforehand; memory read bandwidth "
                 f"{result['bandwidth_gb_s']:.1f} GB/s (one thread). Recall is against Lucene's exact run.", ""]
    for data in result["datasets"]:
        p = data["postings"]
        scan_ms = p["touched_p50"] * 5 / (result["bandwidth_gb_s"] * 1e9) * 1000  # 4-byte docid + 1-byte impact
        lines += [f"## {data['dataset']}: {data.get('terms', 'concepts')} ({data['documents']} passages, "
                  f"{data['queries']} queries; SAE "
                  f"{data['sae']}, **{data['sae_relation']}**; doc K {data['doc_k']})", "",
                  f"BM25 p50: {data['bm25_ms_p50_top10']} ms at top 10, {data['bm25_ms_p50_top1000']} ms at top "
                  f"1000. Query encoding (any engine): {data['query_encode_ms_p50']} ms p50. A query touches "
                  f"{p['touched_share_p50']:.1%} of the {p['postings']:,} postings (p95 {p['touched_share_p95']:.1%});"
                  f" scanning them at memory bandwidth takes {scan_ms:.2f} ms (5 bytes a posting).", "",
                  "| engine | p50 top 10 (ms) | p95 top 10 | p50 top 1000 | p95 top 1000 | × BM25 p50 top 10 / "
                  "top 1000 | R@10 vs exact | R@1000 vs exact | nDCG@10 | extra index | open/build (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["settings"]:
            if "error" in r:
                lines.append(f"| {r['setting']} | not run: {r['error']} |" + " |" * 9)
                continue
            lines.append(f"| {r['setting']} | {r['ms_p50_top10']} | {r['ms_p95_top10']} | {r['ms_p50_top1000']} | "
                         f"{r['ms_p95_top1000']} | {r['vs_bm25_p50_top10']} / {r['vs_bm25_p50_top1000']} | "
                         f"{r['recall@10']} | {r['recall@1000']} | {r['ndcg@10']} | "
                         f"{r['engine_bytes'] / 2**20:.1f} MB | {r['open_or_build_s']} |")
        lines += ["", f"Folder sizes: Lucene {data['lucene_bytes'] / 2**20:.2f} MB + doc_codes "
                      f"{data['doc_codes_bytes'] / 2**20:.2f} MB; BM25 {data['bm25_bytes'] / 2**20:.2f} MB. The "
                      f"hybrid's dense scores of the top 1000 from their codes: {data['rerank1000_ms_p50_derived']} ms "
                      f"p50, against {data['rerank1000_ms_p50_stored']} ms from stored fp32 embeddings (clsr 0.1); "
                      f"explaining the top 10: {data['explain10_ms_p50']} ms.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "clsr-bench-engines"))
    parser.add_argument("--out", default="benchmarks/results/engines.json")
    parser.add_argument("--words", action="store_true",
                        help="the words + concepts index `clsr index` builds by default (else concepts only)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    bandwidth = memory_bandwidth_gb_s()
    datasets = [run_dataset(name, Path(args.work), words=args.words) for name in args.datasets]
    result = {"machine": machine_info(), "versions": versions(), "bandwidth_gb_s": round(bandwidth, 2),
              "datasets": datasets}
    write_report(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
