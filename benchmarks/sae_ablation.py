"""What each SAE training term, data source and size does: variants side by side, one change each.

    python benchmarks/sae_ablation.py --out benchmarks/results/sae-ablation.json
    python benchmarks/sae_ablation.py --study data --out benchmarks/results/sae-data-sources.json

``--study loss`` (default): MSE only (with AuxK), + KL on reconstructions, + KL on the latent dot
product, + both; same data and schedule. ``--study data``: the chosen loss on passages and queries
only, + sentences, + spans, + both, and the full data with 2,048 latents; every variant gets the
same number of steps, since more data would otherwise also mean a longer schedule.
Each is scored on NFCorpus dev (the split used to choose; never trained on) and on SciFact and
NFCorpus test (reported, not used to choose), as nDCG@10 of exact ``sparse_k{64,128}`` and
``reconstructed_k128`` retrieval, with the ratio to the dense model measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from harness import machine_info, sae_fidelity_runs, sae_statistics, top_hits, versions

from clsr.data import load_corpus, load_qrels, load_topics
from clsr.encode.dense import DenseEncoder, encode_corpus, encoder_config
from clsr.evaluate import evaluate
from clsr.sae.config import TrainConfig
from clsr.sae.data import DataRecipe, build_training_data
from clsr.sae.train import Trainer

TRAIN_DATASETS = ("scifact", "nfcorpus", "msmarco-passage/subset-dl19-5k")
EVALUATIONS = (("nfcorpus", "dev"), ("scifact", "test"), ("nfcorpus", "test"))
VARIANTS = {  # which KL terms are on; their weights are flags
    "mse": (),
    "mse+kl": ("kl_weight",),
    "mse+kl_sparse": ("kl_sparse_weight",),
    "mse+kl+kl_sparse": ("kl_weight", "kl_sparse_weight"),
}


DATA_VARIANTS = {  # (recipe, n_latents); the rest of the data (passages, training queries) is always in
    "passages+queries": (DataRecipe(sentences=False, spans_per_doc=0), None),
    "+sentences": (DataRecipe(sentences=True, spans_per_doc=0), None),
    "+spans": (DataRecipe(sentences=False, spans_per_doc=5), None),
    "+sentences+spans": (DataRecipe(), None),
    "+sentences+spans, 2048 latents": (DataRecipe(), 2048),
}


def evaluation_sets(encoder: DenseEncoder) -> dict:
    sets = {}
    for dataset, split in EVALUATIONS:
        documents = load_corpus(dataset)
        topics = load_topics(dataset, split)
        sets[f"{dataset}/{split}"] = {
            "doc_ids": [d.id for d in documents],
            "documents": np.asarray(encode_corpus(encoder, documents).embeddings),
            "qids": list(topics), "queries": encoder.encode_queries(list(topics.values())),
            "qrels": load_qrels(dataset, split)}
    return sets


def score(sae, sets: dict) -> dict:
    result = {}
    for name, s in sets.items():
        dense = evaluate(top_hits(s["queries"] @ s["documents"].T, s["qids"], s["doc_ids"], 100), s["qrels"],
                         ["ndcg@10"])["ndcg@10"]
        row = {"dense": round(dense, 4), **sae_statistics(sae, s["queries"], s["documents"])}
        for k in (64, 128):
            runs = sae_fidelity_runs(sae, s["queries"], s["documents"], s["qids"], s["doc_ids"], k, depth=100)
            for method, run in runs.items():
                if method != "reconstructed_k64":
                    ndcg = evaluate(run, s["qrels"], ["ndcg@10"])["ndcg@10"]
                    row[method] = round(ndcg, 4)
                    row[f"{method}_ratio"] = round(ndcg / dense, 3)
        result[name] = row
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--study", choices=["loss", "data"], default="loss")
    parser.add_argument("--variants", nargs="+",
                        help=f"some of {list(VARIANTS)} (loss study) or of {list(DATA_VARIANTS)} (data study)")
    parser.add_argument("--steps", type=int, default=1100, help="data study: steps per variant (default 1100)")
    parser.add_argument("--n-latents", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--kl-weight", type=float, default=0.1)
    parser.add_argument("--kl-sparse-weight", type=float, default=0.1)
    parser.add_argument("--tau", type=float, default=0.05)
    parser.add_argument("--work-dir", default=str(Path(__file__).parent / "work" / "sae-ablation"))
    args = parser.parse_args(argv)

    encoder = DenseEncoder(encoder_config("minilm"))
    sets = evaluation_sets(encoder)
    results = {}
    if args.study == "loss":
        data, _ = build_training_data(TRAIN_DATASETS, encoder, DataRecipe())
        plans = [(variant, data, {term: getattr(args, term) for term in VARIANTS[variant]}, args.n_latents,
                  args.epochs) for variant in (args.variants or VARIANTS)]
    else:
        plans = []
        for variant, (recipe, n_latents) in DATA_VARIANTS.items():
            if args.variants and variant not in args.variants:
                continue
            data, _ = build_training_data(TRAIN_DATASETS, encoder, recipe)
            epochs = max(1, round(args.steps * args.batch_size / len(data.vectors)))
            plans.append((variant, data, {"kl_weight": args.kl_weight, "kl_sparse_weight": args.kl_sparse_weight},
                          n_latents or args.n_latents, epochs))
    for variant, data, weights, n_latents, epochs in plans:
        config = TrainConfig(n_latents=n_latents, k=args.k, epochs=epochs, lr=args.lr, tau=args.tau,
                             tau_sparse=args.tau, batch_size=args.batch_size, **weights)
        start = time.perf_counter()
        trainer = Trainer(data, config, Path(args.work_dir) / args.study / variant, encoder=encoder.config.to_dict())
        sae = trainer.fit()
        results[variant] = {"config": dataclasses.asdict(config),
                            "train_seconds": round(time.perf_counter() - start, 1),
                            "steps": trainer.step, "training_vectors": len(data.vectors), "scores": score(sae, sets)}
        print(variant, json.dumps(results[variant]["scores"]), flush=True)
    output = {"study": args.study, "train_datasets": TRAIN_DATASETS, "training_vectors": len(data.vectors),
              "variants": results, "machine": machine_info(), "versions": versions()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(output, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(output))
    sys.stdout.write(markdown(output))


def markdown(output: dict) -> str:
    config = next(iter(output["variants"].values()))["config"]
    weights = {term: max(v["config"][term] for v in output["variants"].values())
               for term in ("kl_weight", "kl_sparse_weight")}
    title = "training-data and size study" if output.get("study") == "data" else "training-term ablation"
    schedule = (f"{next(iter(output['variants'].values()))['steps']} steps each"
                if output.get("study") == "data" else f"{config['epochs']} epochs")
    lines = [f"# SAE {title}", "",
             f"Training data from {', '.join(output['train_datasets'])}; "
             f"{config['n_latents']} latents, K={config['k']}, {schedule}, lr {config['lr']}, "
             f"seed {config['seed']}; KL weights when on: {weights['kl_weight']} (reconstructions), "
             f"{weights['kl_sparse_weight']} (codes), tau {config['tau']}. "
             "Sparse and reconstructed columns are nDCG@10 as a ratio to dense in the same run. "
             "Variants are chosen on nfcorpus/dev; the test rows are reported, not used to choose.", "",
             "| variant | vectors | latents | train s | eval set | FVU docs | FVU queries | sparse k64 | sparse k128 "
             "| recon k128 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for variant, result in output["variants"].items():
        for name, row in result["scores"].items():
            lines.append(f"| {variant} | {result.get('training_vectors', output['training_vectors'])} "
                         f"| {result['config']['n_latents']} | {result['train_seconds']} | {name} "
                         f"| {row['fvu_docs']} | {row['fvu_queries']} "
                         f"| {row['sparse_k64_ratio']} | {row['sparse_k128_ratio']} "
                         f"| {row['reconstructed_k128_ratio']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
