"""Does the concept code carry to a corpus the SAE never saw? Zero-shot, adapted and fitted, leave-one-out.

    python benchmarks/transfer.py --dataset scifact --dataset nfcorpus --out benchmarks/results/transfer.json

For each collection, three rows per starting SAE, every ratio to the dense model's nDCG@10 in the
same run (test split):

* **zero-shot**: the starting SAE as it is. It must never have seen the collection (the shipped
  default was trained on general English only); a start whose config names the collection is refused.
* **adapted**: `clsr adapt-sae` on the collection's own passages, sentences and spans, no judgments;
  training and encoding time are reported apart.
* **fitted**: an SAE trained from scratch on the same unsupervised data (the transductive ceiling
  a per-corpus SAE reaches); ``--fitted DIR`` reuses one (``{dataset}`` in DIR is replaced), else
  it is trained here.

Columns: FVU of documents and queries, sparse Lucene K=64 and K=128, hybrid K=128 and CL-SR+BM25.
The hybrid's and CL-SR+BM25's alpha are tuned **self-supervised**, on 300 pseudo-queries drawn
from the corpus (a sentence or span, its passage relevant), as a user with no tuning split would;
the alpha a real train/dev split picks is reported beside it, with the nDCG@10 each gives.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import time
from pathlib import Path

from harness import (
    build_baselines,
    build_concept_index_for,
    machine_info,
    sae_relation,
    sae_statistics,
    seen_collections,
    versions,
    write_report,
)

from clsr.data import load_corpus, load_qrels, load_topics, resolve
from clsr.evaluate import evaluate
from clsr.fusion import (
    HybridSearcher,
    best_alpha,
    interpolate,
    interpolation_curve,
    pseudo_queries,
    reciprocal_rank_fusion,
)
from clsr.sae.model import TopKSae, default_sae_path
from clsr.search import Bm25Searcher, ClsrSearcher, DenseSearcher

HERE = Path(__file__).resolve().parent
DEPTH = 1000
PSEUDO_QUERIES = 300
TUNING_SPLITS = ("dev", "train")


def ndcg(run, qrels) -> float:
    return round(evaluate(run, qrels, ["ndcg@10"])["ndcg@10"], 4)


def refuse_if_seen(sae_path: Path, dataset: str) -> None:
    if sae_relation(sae_path, dataset) != "zero-shot":
        raise SystemExit(f"{sae_path} was trained on {seen_collections(sae_path)}: it is no zero-shot start for "
                         f"{dataset}")


def fit_from_scratch(baselines, source: str, output: Path, epochs: int) -> Path:
    """An SAE trained from scratch on the corpus's own passages, sentences and spans (no judgments)."""
    from clsr.sae.adapt import corpus_training_data
    from clsr.sae.config import TrainConfig
    from clsr.sae.train import Trainer

    data, provenance = corpus_training_data(source, baselines.encoder)
    config = TrainConfig(epochs=epochs, lr=1e-3, kl_weight=0.1, kl_sparse_weight=0.3, multi_k=(64,))
    Trainer(data, config, output, encoder=baselines.encoder.config.to_dict(),
            provenance={"data": provenance}).fit()
    return output


def measure_sae(name: str, sae_path: Path, baselines, work: Path, topics, qrels, query_vectors, documents,
                pseudo: tuple, real_tuning: dict | None, bm25_runs: dict, dense_ndcg: float) -> dict:
    """One row: FVU, sparse K=64/128 and the self-tuned hybrid and CL-SR+BM25, each also as a ratio to dense."""
    sae = TopKSae.load_from_disk(sae_path)
    stats = sae_statistics(sae, query_vectors, documents)
    row = {"sae": str(sae_path), "fvu_docs": stats["fvu_docs"], "fvu_queries": stats["fvu_queries"],
           "unused_fraction": stats["unused_fraction"]}
    for k in (64, 128):
        index_dir = work / f"transfer-{name}-k{k}"
        build_concept_index_for(baselines, index_dir, sae_path, doc_k=k)
        row[f"sparse_k{k}"] = ndcg(ClsrSearcher(index_dir, encoder=baselines.encoder.config).batch_search(
            topics, k=DEPTH, progress=False), qrels)
    hybrid = HybridSearcher(work / f"transfer-{name}-k128", encoder=baselines.encoder.config)
    pseudo_topics, pseudo_qrels = pseudo
    tune_sparse, tune_dense = hybrid.component_runs(pseudo_topics)
    curve = interpolation_curve(tune_sparse, tune_dense, pseudo_qrels)
    alpha = best_alpha(curve)
    test_sparse, test_dense = hybrid.component_runs(topics)
    hybrid_run = interpolate(test_sparse, test_dense, alpha, k=DEPTH)
    row.update(hybrid_k128=ndcg(hybrid_run, qrels), hybrid_alpha=alpha, hybrid_alpha_curve=curve,
               hybrid_sparse_side=ndcg(interpolate(test_sparse, test_dense, 1.0, k=DEPTH), qrels),
               hybrid_dense_side=ndcg(interpolate(test_sparse, test_dense, 0.0, k=DEPTH), qrels))
    bm25_curve = interpolation_curve(interpolate(tune_sparse, tune_dense, alpha, k=DEPTH), bm25_runs["pseudo"],
                                     pseudo_qrels)
    bm25_alpha = best_alpha(bm25_curve)
    row.update(clsr_bm25=ndcg(interpolate(hybrid_run, bm25_runs["test"], bm25_alpha), qrels),
               clsr_bm25_alpha=bm25_alpha, clsr_bm25_alpha_curve=bm25_curve,
               # RRF needs no alpha: the untuned fusion, since sentence pseudo-queries favour BM25's exact matches.
               clsr_bm25_rrf=ndcg(reciprocal_rank_fusion([hybrid_run, bm25_runs["test"]]), qrels))
    if real_tuning is not None:
        real_sparse, real_dense = hybrid.component_runs(real_tuning["topics"])
        real_alpha = best_alpha(interpolation_curve(real_sparse, real_dense, real_tuning["qrels"]))
        real_bm25_alpha = best_alpha(interpolation_curve(interpolate(real_sparse, real_dense, real_alpha, k=DEPTH),
                                                         bm25_runs["real"], real_tuning["qrels"]))
        real_hybrid = interpolate(test_sparse, test_dense, real_alpha, k=DEPTH)
        row.update(real_split=real_tuning["split"], hybrid_alpha_real=real_alpha,
                   hybrid_k128_real_alpha=ndcg(real_hybrid, qrels), clsr_bm25_alpha_real=real_bm25_alpha,
                   clsr_bm25_real_alpha=ndcg(interpolate(real_hybrid, bm25_runs["test"], real_bm25_alpha), qrels))
    for key in ("sparse_k64", "sparse_k128", "hybrid_k128", "hybrid_sparse_side", "hybrid_dense_side", "clsr_bm25",
                "clsr_bm25_rrf"):
        row[f"{key}_x_dense"] = round(row[key] / dense_ndcg, 3)
    return row


def measure(dataset: str, starts: dict[str, str], fitted: str | None, fitted_epochs: int, split: str,
            reuse_adapted: bool = False, previous: dict | None = None) -> dict:
    from clsr.sae.adapt import AdaptConfig, adapt_to_corpus

    source = str(resolve(dataset))
    name = re.sub(r"[^\w.-]+", "_", dataset.strip("/"))
    work = HERE / "work" / name
    baselines = build_baselines(source, work)
    topics, qrels = load_topics(source, split), load_qrels(source, split)
    dense = DenseSearcher(baselines.dense_dir, encoder=baselines.encoder)
    query_vectors = dense.encoder.encode_queries(list(topics.values()))
    documents = dense.index.reconstruct_n(0, dense.index.ntotal)
    dense_ndcg = ndcg(dict(zip(topics, dense.search_vectors(query_vectors, DEPTH))), qrels)
    bm25 = Bm25Searcher(baselines.bm25_dir)
    pseudo = pseudo_queries(load_corpus(source), PSEUDO_QUERIES, seed=0)
    real_split = next((s for s in TUNING_SPLITS if s != split and (Path(source) / "qrels" / f"{s}.tsv").exists()), None)
    real_tuning = None
    bm25_runs = {"test": bm25.batch_search(topics, k=DEPTH), "pseudo": bm25.batch_search(pseudo[0], k=DEPTH)}
    if real_split:
        real_tuning = {"split": real_split, "topics": load_topics(source, real_split),
                       "qrels": load_qrels(source, real_split)}
        bm25_runs["real"] = bm25.batch_search(real_tuning["topics"], k=DEPTH)
    common = dict(baselines=baselines, work=work, topics=topics, qrels=qrels, query_vectors=query_vectors,
                  documents=documents, pseudo=pseudo, real_tuning=real_tuning, bm25_runs=bm25_runs,
                  dense_ndcg=dense_ndcg)
    rows = {}
    previous = previous or {}
    for start_name, start_dir in starts.items():
        start_path = Path(start_dir.replace("{dataset}", name))
        refuse_if_seen(start_path, name)
        logging.info("%s: zero-shot %s", name, start_name)
        rows[f"{start_name}/zero-shot"] = measure_sae(f"{start_name}-zero-shot", start_path, **common)
        adapted_dir = work / f"adapted-{start_name}"
        if reuse_adapted and (adapted_dir / "config.json").exists():
            # Measured again without adapting again: the report of the run that made it.
            adaptation = json.loads((adapted_dir / "config.json").read_text())["training"]["adaptation"]
            report, encode_seconds = adaptation["report"], previous.get(f"{start_name}/adapted", {}).get(
                "adaptation_encode_s", float("nan"))
        else:
            _, report, encode_seconds = adapt_to_corpus(start_path, source, baselines.encoder, adapted_dir,
                                                        AdaptConfig(), progress=False)
            report = report.to_dict()
        rows[f"{start_name}/adapted"] = {**measure_sae(f"{start_name}-adapted", adapted_dir, **common),
                                         "adaptation": report, "adaptation_encode_s": round(encode_seconds, 1)}
    fitted_dir = Path(fitted.replace("{dataset}", name)) if fitted else work / "fitted-sae"
    if not (fitted_dir / "sae.safetensors").exists():
        start = time.perf_counter()
        fit_from_scratch(baselines, source, fitted_dir, fitted_epochs)
        logging.info("fitted an SAE in %.0f s", time.perf_counter() - start)
    rows["fitted"] = measure_sae("fitted", fitted_dir, **common)
    return {"dataset": dataset, "split": split, "queries": len(topics), "dense_ndcg@10": dense_ndcg,
            "bm25_ndcg@10": ndcg(bm25_runs["test"], qrels), "documents": len(baselines.documents),
            "pseudo_queries": PSEUDO_QUERIES, "rows": rows}


def markdown(result: dict) -> str:
    lines = ["# Transfer: zero-shot, adapted and fitted SAEs (leave-one-collection-out)", "",
             "Ratios to the dense model's nDCG@10 in the same run (test splits). Hybrid and CL-SR+BM25 alpha "
             f"tuned on {PSEUDO_QUERIES} pseudo-queries drawn from each corpus (no judgments); the alpha a real "
             "split picks is in the second table. No starting SAE saw the collection it is measured on.", "",
             "| collection | SAE | FVU docs | FVU queries | sparse K=64 | sparse K=128 | hybrid K=128 (α) "
             "| CL-SR+BM25 (α) | CL-SR+BM25 RRF | adaptation s (+encode s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for collection in result["collections"]:
        for row_name, row in collection["rows"].items():
            adaptation = (f"{row['adaptation']['seconds']:.0f} (+{row['adaptation_encode_s']:.0f})"
                          if "adaptation" in row else "–")
            lines.append(f"| {collection['dataset']} | {row_name} | {row['fvu_docs']:.3f} | {row['fvu_queries']:.3f} "
                         f"| {row['sparse_k64_x_dense']:.3f} | {row['sparse_k128_x_dense']:.3f} "
                         f"| {row['hybrid_k128_x_dense']:.3f} ({row['hybrid_alpha']}) "
                         f"| {row['clsr_bm25_x_dense']:.3f} ({row['clsr_bm25_alpha']}) "
                         f"| {row.get('clsr_bm25_rrf_x_dense', float('nan')):.3f} | {adaptation} |")
    lines += ["", "Absolute nDCG@10: "
              + "; ".join(f"{c['dataset']}: dense {c['dense_ndcg@10']}, BM25 {c['bm25_ndcg@10']}"
                          for c in result["collections"]) + ".", "",
              "Self-supervised against real-split alpha (nDCG@10), and the hybrid's two sides alone:", "",
              "| collection | SAE | hybrid α pseudo → nDCG | α real split → nDCG | sparse side | dense side "
              "| CL-SR+BM25 α pseudo → nDCG | α real → nDCG |",
              "|---|---|---|---|---|---|---|---|"]
    for collection in result["collections"]:
        for row_name, row in collection["rows"].items():
            real = (f"{row['hybrid_alpha_real']} → {row['hybrid_k128_real_alpha']:.4f} ({row['real_split']})"
                    if "real_split" in row else "–")
            real_bm25 = (f"{row['clsr_bm25_alpha_real']} → {row['clsr_bm25_real_alpha']:.4f}"
                         if "real_split" in row else "–")
            lines.append(f"| {collection['dataset']} | {row_name} | {row['hybrid_alpha']} → {row['hybrid_k128']:.4f} "
                         f"| {real} | {row['hybrid_sparse_side']:.4f} | {row['hybrid_dense_side']:.4f} "
                         f"| {row['clsr_bm25_alpha']} → {row['clsr_bm25']:.4f} | {real_bm25} |")
    adapted = [r for c in result["collections"] for r in c["rows"].values() if "adaptation" in r]
    if adapted:
        lines += ["", "Adaptation: " + "; ".join(
            f"{Path(r['sae']).parent.name}/{Path(r['sae']).name}: {r['adaptation']['revived']} latents revived, "
            f"{r['adaptation']['kept_share']:.0%} of the others kept direction (cos > 0.9), passage FVU "
            f"{r['adaptation']['fvu_before']:.3f} → {r['adaptation']['fvu_after']:.3f}" for r in adapted)
            + ". Adaptation runs a fixed 1,500 steps whatever the corpus size; encoding its sentences and spans "
              "is timed apart (0 when the embedding cache already held them)."]
    machine, v = result["machine"], result["versions"]
    lines += ["", "Starting SAEs: " + ", ".join(f"{k} = {p}" for k, p in result["starts"].items())
              + f". Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores, "
              f"{machine['memory_gib']} GiB); clsr {v['clsr']}, Pyserini {v['pyserini']}, torch {v['torch']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True, help="collection(s) to measure")
    parser.add_argument("--split", default="test")
    parser.add_argument("--start", action="append", metavar="NAME=DIR",
                        help="a starting SAE ({dataset} in DIR is replaced; default: default=<the bundled SAE>)")
    parser.add_argument("--fitted", help="folder of an SAE fitted on the collection ({dataset} is replaced); "
                                         "default: train one here")
    parser.add_argument("--fitted-epochs", type=int, default=24)
    parser.add_argument("--out", required=True)
    parser.add_argument("--reuse-adapted", action="store_true",
                        help="measure SAEs adapted by an earlier run again instead of adapting anew")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other collections already in --out (a collection measured again is replaced)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    starts = dict(s.split("=", 1) for s in args.start) if args.start else {"default": str(default_sae_path())}
    result = {"collections": [], "starts": {}, "machine": machine_info(), "versions": versions()}
    if args.merge and Path(args.out).exists():
        result = {**json.loads(Path(args.out).read_text()), "machine": result["machine"],
                  "versions": result["versions"]}
    result["starts"].update(starts)
    for dataset in args.dataset:  # written after each collection, so a long run keeps what it measured
        previous = next((c["rows"] for c in result["collections"] if c["dataset"] == dataset), {})
        result["collections"] = [c for c in result["collections"] if c["dataset"] != dataset]
        result["collections"].append(measure(dataset, starts, args.fitted, args.fitted_epochs, args.split,
                                             args.reuse_adapted, previous))
        result["measured"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        write_report(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
