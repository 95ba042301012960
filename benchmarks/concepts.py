"""Are the concept descriptions faithful? And how are concepts spread over the corpus (Zipf plot)?

    python benchmarks/concepts.py --dataset scifact --dataset nfcorpus --out benchmarks/results/concepts.json

Faithfulness: the corpus is split in two halves. Each sampled concept is described (offline
c-TF-IDF describer) from its top passages in the first half only. On the held-out half, each
passage is scored by how many of the description's keywords it contains (stemmed), and the ROC
AUC of that score for "the passage activates the concept" (it is in the passage's top-K code) is
computed. The baseline gives each concept another sampled concept's description (shuffled within
the region). Mean AUC per region (head, torso, tail), true against shuffled. 0.5 is chance.

Zipf: concept document frequency against rank, with BM25's term document frequencies on the same
axes (the seed paper's Figure 3), one PNG per collection.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
from harness import build_baselines, build_concept_index_for, machine_info, versions, write_report

from clsr.data import resolve
from clsr.index import DocCodes
from clsr.interpret.describe import KeywordDescriber, regions
from clsr.sae.model import default_sae_path

HERE = Path(__file__).resolve().parent
DOC_K = 64
PER_REGION = 100
TOP_PASSAGES = 10


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged; None without both classes."""
    from scipy.stats import rankdata

    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def faithfulness(codes: DocCodes, texts: dict[str, str], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = list(codes.ids)
    order = rng.permutation(len(ids))
    describe_rows, held_out_rows = np.sort(order[: len(ids) // 2]), np.sort(order[len(ids) // 2:])
    latents, activations = np.asarray(codes.latents, np.int64), np.asarray(codes.activations)
    n_latents = int(latents.max()) + 1
    fired = activations > 0
    df = np.bincount(latents[fired], minlength=n_latents)
    _, region = regions(df)

    describer = KeywordDescriber(texts[ids[r]] for r in describe_rows)
    held_out_stems = [{stem for stem, _ in describer.tokens(texts[ids[r]])} for r in held_out_rows]
    held_out_fires = [set(latents[r][fired[r]].tolist()) for r in held_out_rows]
    # Concepts described and tested must fire in both halves: in one to be described, in the other to be tested.
    in_both = (np.bincount(latents[describe_rows][fired[describe_rows]], minlength=n_latents) > 0) & \
              (np.bincount(latents[held_out_rows][fired[held_out_rows]], minlength=n_latents) > 0)

    results, samples = {}, {}
    for name in ("head", "torso", "tail"):
        candidates = [int(l) for l in np.flatnonzero((region == name) & in_both)]
        samples[name] = [int(c) for c in rng.choice(candidates, size=min(PER_REGION, len(candidates)), replace=False)]
    descriptions = {}
    for chosen in samples.values():
        for latent in chosen:
            rows = [r for r in describe_rows if fired[r][latents[r] == latent].any()]
            rows.sort(key=lambda r: -activations[r][latents[r] == latent].max())
            passages = [texts[ids[r]] for r in rows[:TOP_PASSAGES]]
            descriptions[latent] = describer.describe(passages) if passages else ""

    def keyword_stems(description: str) -> set[str]:
        return {describer.stem(word) for word in description.split(", ") if describer.stem(word)}

    for name, chosen in samples.items():
        true_aucs, shuffled_aucs = [], []
        shuffled = list(rng.permutation(chosen)) if len(chosen) > 1 else chosen
        for latent, other in zip(chosen, shuffled):
            labels = np.array([latent in fires for fires in held_out_fires])
            for description, bucket in ((descriptions[latent], true_aucs), (descriptions[other], shuffled_aucs)):
                stems = keyword_stems(description)
                scores = np.array([len(stems & passage) for passage in held_out_stems], float)
                value = auc(scores, labels)
                if value is not None:
                    bucket.append(value)
        results[name] = {"concepts": len(chosen), "auc": round(float(np.mean(true_aucs)), 4) if true_aucs else None,
                         "auc_shuffled": round(float(np.mean(shuffled_aucs)), 4) if shuffled_aucs else None,
                         "examples": {f"c{l}": descriptions[l] for l in chosen[:5]}}
    return results


def zipf_plot(codes: DocCodes, bm25_dir: Path, dataset: str, path: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clsr.jvm import pyserini_lucene

    pyserini_lucene()
    from pyserini.index.lucene import LuceneIndexReader

    latents, activations = np.asarray(codes.latents, np.int64), np.asarray(codes.activations)
    concept_df = np.sort(np.bincount(latents[activations > 0]))[::-1]
    concept_df = concept_df[concept_df > 0]
    term_df = np.sort(np.array([t.df for t in LuceneIndexReader(str(bm25_dir)).terms()]))[::-1]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    axis.loglog(np.arange(1, len(term_df) + 1), term_df, label=f"BM25 terms ({len(term_df):,})", color="tab:grey")
    axis.loglog(np.arange(1, len(concept_df) + 1), concept_df, label=f"concepts, K={DOC_K} ({len(concept_df):,} used)",
                color="tab:red")
    axis.set_xlabel("rank")
    axis.set_ylabel("document frequency")
    axis.set_title(f"{dataset}: document frequency against rank")
    axis.legend()
    axis.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return {"concepts_used": int(len(concept_df)), "terms": int(len(term_df)),
            "concept_df_max": int(concept_df[0]), "term_df_max": int(term_df[0])}


def measure(dataset: str, out_dir: Path) -> dict:
    source = resolve(dataset)
    name = Path(str(source)).name
    baselines = build_baselines(str(source), HERE / "work" / name)
    index_dir = HERE / "work" / name / f"concepts-k{DOC_K}"
    build_concept_index_for(baselines, index_dir, default_sae_path(), DOC_K, reuse=True)
    codes = DocCodes(index_dir)
    texts = {d.id: d.text for d in baselines.documents}
    zipf = zipf_plot(codes, baselines.bm25_dir, name, out_dir / f"{name}-zipf.png")
    result = {"dataset": name, "doc_k": DOC_K, "faithfulness": faithfulness(codes, texts), "zipf": zipf}
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def markdown(result: dict) -> str:
    lines = ["# Concept descriptions: faithfulness on held-out passages", "",
             f"Offline describer (c-TF-IDF keywords of a concept's top {TOP_PASSAGES} passages in one half of the "
             "corpus). ROC AUC, on the other half, of 'number of description keywords in the passage' for 'the "
             f"passage activates the concept' (top-{DOC_K} code), mean over up to {PER_REGION} sampled concepts per "
             "region; shuffled: each concept scored with another sampled concept's description. 0.5 is chance.", "",
             "| collection | region | concepts | AUC | AUC shuffled | example descriptions |",
             "|---|---|---|---|---|---|"]
    for data in result["datasets"]:
        for region, r in data["faithfulness"].items():
            examples = "; ".join(f"{c}: {d}" for c, d in list(r["examples"].items())[:3])
            lines.append(f"| {data['dataset']} | {region} | {r['concepts']} | {r['auc']} | {r['auc_shuffled']} "
                         f"| {examples} |")
    lines += ["", "Zipf plots (concept document frequency against rank, BM25 terms on the same axes): "
              + ", ".join(f"[{d['dataset']}]({d['dataset']}-zipf.png)" for d in result["datasets"]) + ".", ""]
    machine = result["machine"]
    lines += [f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)  # the Zipf plots go beside the report
    result = {"measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "datasets": [measure(d, out.parent) for d in args.dataset], "machine": machine_info(),
              "versions": versions()}
    write_report(result, out, markdown(result))


if __name__ == "__main__":
    main()
