"""Quality and cost of every method on one BEIR-layout collection, measured in one run.

    python benchmarks/quality.py --dataset scifact --out benchmarks/results/scifact.json

Writes the JSON (``{"dataset", "split", "methods": {name: {...}}, "machine", "versions"}``) and a
markdown table beside it (same name, ``.md``). Latencies are per query, one thread, top 1000:
``search_ms_*`` excludes query encoding, ``e2e_ms_p50`` includes it. Indexes are built under
``benchmarks/work/<dataset>/`` (git-ignored) and reused; embeddings come from the clsr cache.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import sys
from pathlib import Path

from clsr.data import load_qrels, load_topics, resolve
from clsr.experiment import (build_baselines, latencies_ms, machine_info, method_report, percentile,
                             sae_fidelity_runs, sae_statistics, versions)
from clsr.sae import TopKSae, default_sae_path
from clsr.search import Bm25Searcher, DenseSearcher

HERE = Path(__file__).resolve().parent
DEPTH = 1000


SAE_KS = (32, 64, 128)


def measure(dataset: str, split: str, relevance_threshold: int, sae_path: Path | None) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)  # single-thread latency, comparable with Lucene's one search thread
    source = resolve(dataset)
    name = re.sub(r"[^\w.-]+", "_", str(dataset).strip("/"))
    topics, qrels = load_topics(source, split), load_qrels(source, split)
    baselines = build_baselines(str(source), HERE / "work" / name)
    texts = list(topics.values())
    methods = {}

    bm25 = Bm25Searcher(baselines.bm25_dir)
    run = bm25.batch_search(topics, k=DEPTH)
    timings = latencies_ms(lambda q: bm25.search(q, DEPTH), texts)
    methods["bm25"] = method_report(run, qrels, timings, baselines.bm25_dir, relevance_threshold,
                                    e2e_ms_p50=round(percentile(timings, 0.5), 3))

    dense = DenseSearcher(baselines.dense_dir, encoder=baselines.encoder)
    vectors = dense.encoder.encode_queries(texts)
    run = dict(zip(topics, dense.search_vectors(vectors, DEPTH)))
    timings = latencies_ms(lambda v: dense.search_vectors(v[None, :], DEPTH), list(vectors))
    end_to_end = latencies_ms(lambda q: dense.search(q, DEPTH), texts)
    methods["dense"] = method_report(run, qrels, timings, baselines.dense_dir, relevance_threshold,
                                     e2e_ms_p50=round(percentile(end_to_end, 0.5), 3),
                                     encode_docs_per_s=round(baselines.encode_docs_per_s, 1),
                                     encoder=baselines.encoder.config.model, dtype=baselines.encoder.dtype)

    sae_report = None
    if sae_path is not None:
        sae = TopKSae.load_from_disk(sae_path)
        sae.check_encoder(baselines.encoder.config.to_dict())
        documents = dense.index.reconstruct_n(0, dense.index.ntotal)
        shown_path = sae_path.resolve()
        shown_path = shown_path.relative_to(HERE.parent) if shown_path.is_relative_to(HERE.parent) else shown_path
        sae_report = {"path": str(shown_path), "n_latents": sae.config.n_latents, "k": sae.config.k,
                      **sae_statistics(sae, vectors, documents)}
        for k in SAE_KS:
            if k <= sae.config.k:
                for name, run in sae_fidelity_runs(sae, vectors, documents, list(topics), dense.ids, k, DEPTH).items():
                    methods[name] = method_report(run, qrels, relevance_threshold=relevance_threshold)

    return {"dataset": str(dataset), "split": split, "queries": len(topics), "relevance_threshold": relevance_threshold,
            "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "methods": methods, "sae": sae_report, "machine": machine_info(), "versions": versions()}


def markdown(result: dict) -> str:
    dense_ndcg = result["methods"].get("dense", {}).get("ndcg@10")
    lines = [f"# {result['dataset']} ({result['split']}, {result['queries']} queries)", "",
             "| method | nDCG@10 | ×dense | MRR@10 | R@100 | R@1000 | index MB | search p50 ms | search p95 ms "
             "| e2e p50 ms | encode docs/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    def cell(m: dict, key: str, fmt: str, scale: float = 1.0) -> str:
        return format(m[key] * scale, fmt) if key in m else "–"

    for name, m in result["methods"].items():
        ratio = f"{m['ndcg@10'] / dense_ndcg:.3f}" if dense_ndcg else "–"
        lines.append(
            f"| {name} | {m['ndcg@10']:.4f} | {ratio} | {m['mrr@10']:.4f} | {m['recall@100']:.4f} "
            f"| {m['recall@1000']:.4f} | {cell(m, 'index_bytes', '.2f', 2**-20)} | {cell(m, 'search_ms_p50', '.2f')} "
            f"| {cell(m, 'search_ms_p95', '.2f')} | {cell(m, 'e2e_ms_p50', '.2f')} "
            f"| {m.get('encode_docs_per_s', '–')} |")
    if result.get("sae"):
        sae = result["sae"]
        lines += ["", f"SAE {sae['path']} ({sae['n_latents']} latents, trained k={sae['k']}): "
                  f"FVU docs {sae['fvu_docs']}, queries {sae['fvu_queries']}; MSE docs {sae['mse_docs']}, "
                  f"queries {sae['mse_queries']}; dead at the end of training: {sae['dead_fraction']}; "
                  f"unused on this collection's documents and queries: {sae['unused_fraction']:.2%}. "
                  "sparse_k* and reconstructed_k* are exact (no index yet): no size or latency."]
    machine, v = result["machine"], result["versions"]
    lines += ["", f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores, "
              f"{machine['memory_gib']} GiB), one search thread, top {DEPTH}. "
              f"clsr {v['clsr']}, Pyserini {v['pyserini']} (Anserini {v['anserini']}), torch {v['torch']}, "
              f"faiss {v['faiss-cpu']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a BEIR folder or a collection name under $CLSR_DATA")
    parser.add_argument("--split", default="test")
    parser.add_argument("--relevance-threshold", type=int, default=1, help="2 for TREC DL qrels")
    parser.add_argument("--out", required=True, help="JSON file to write; the .md table goes beside it")
    parser.add_argument("--sae", help="SAE folder for the sparse_k*/reconstructed_k* rows (default: the bundled one)")
    parser.add_argument("--no-sae", action="store_true", help="baselines only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sae_path = None if args.no_sae else Path(args.sae) if args.sae else default_sae_path()
    result = measure(args.dataset, args.split, args.relevance_threshold, sae_path)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    sys.stdout.write(markdown(result))


if __name__ == "__main__":
    main()
