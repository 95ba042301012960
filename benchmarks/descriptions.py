"""Do concept descriptions predict activation? Held-out faithfulness per region, for each describer.

    python benchmarks/descriptions.py --dataset scifact --dataset nfcorpus --out benchmarks/results/descriptions.json
        [--sae DIR] [--llm-url URL --llm-model NAME]

The corpus is split in two halves (seed 0). Each sampled concept (up to `--per-region` per region,
firing in both halves) is described from the first half only; on the held-out half every passage
is scored by how many of the description's keywords it contains (stemmed; markers such as
"broad:" dropped), and two ROC AUCs are measured:

* **fires**: the passage has the concept in its top-K code, against every other passage;
* **strong**: the passage is in the concept's top decile (of the held-out passages where it
  fires), against every other passage, so that a head concept that fires nearly everywhere is
  judged on where it fires *strongly*.

The baseline gives each concept another sampled concept's description from the same region
(shuffled). Describers: `keywords` (c-TF-IDF of the top passages, the former default), `evidence`
(word evidence aggregated over the top passages, checked against activations on the describe half:
clsr.evidence_describer), and `llm` when an endpoint is given. 0.5 is chance.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

from clsr.data import resolve
from clsr.describe import KeywordDescriber, regions
from clsr.evidence import EvidenceExplainer
from clsr.evidence_describer import EvidenceDescriber, count_auc, description_keywords, strong_labels
from clsr.experiment import build_baselines, build_concept_index_for, machine_info, versions, write_report
from clsr.index import DocCodes
from clsr.sae import TopKSae, default_sae_path
from provenance import provenance_line, sae_provenance

HERE = Path(__file__).resolve().parent
REGIONS = ("head", "torso", "tail")


def measure(dataset: str, sae_path: Path, args) -> dict:
    source = resolve(dataset)
    name = Path(str(source)).name
    baselines = build_baselines(str(source), HERE / "work" / name)
    index_dir = HERE / "work" / name / f"concepts-k{args.doc_k}-{sae_path.name}"
    build_concept_index_for(baselines, index_dir, sae_path, args.doc_k, reuse=True)
    codes = DocCodes(index_dir)
    texts_by_id = {d.id: d.text for d in baselines.documents}
    texts = [texts_by_id[i] for i in codes.ids]
    latents, activations = np.asarray(codes.latents, np.int64), np.asarray(codes.activations, np.float32)

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(texts))
    describe_rows, held_rows = np.sort(order[:len(texts) // 2]), np.sort(order[len(texts) // 2:])
    n_latents = int(latents.max()) + 1
    fired = activations > 0
    df = np.bincount(latents[fired], minlength=n_latents)
    _, region = regions(df)
    in_both = ((np.bincount(latents[describe_rows][fired[describe_rows]], minlength=n_latents) > 0)
               & (np.bincount(latents[held_rows][fired[held_rows]], minlength=n_latents) > 0))
    samples = {}
    for r in REGIONS:
        candidates = np.flatnonzero((region == r) & in_both)
        samples[r] = [int(c) for c in rng.choice(candidates, size=min(args.per_region, len(candidates)), replace=False)]
    chosen = [latent for r in REGIONS for latent in samples[r]]

    describe_texts = [texts[r] for r in describe_rows]
    keyword_describer = KeywordDescriber(describe_texts)
    sae = TopKSae.load_from_disk(sae_path)
    explainer = EvidenceExplainer(baselines.encoder, sae)
    evidence_describer = EvidenceDescriber(explainer, describe_texts, latents[describe_rows], activations[describe_rows],
                                           keyword_describer.stem, top_passages=args.top_passages)
    descriptions, timings, kinds = {}, {}, {}
    start = time.perf_counter()
    descriptions["keywords"] = {l: keyword_describer.describe([describe_texts[r] for r in
                                                               evidence_describer.top_rows(evidence_describer.activation_column(l))])
                                for l in chosen}
    timings["keywords"] = time.perf_counter() - start
    start = time.perf_counter()
    labels = evidence_describer.describe_latents(chosen, progress=True)
    descriptions["evidence"] = {l: labels[l]["description"] for l in chosen}
    kinds["evidence"] = {l: labels[l]["kind"] for l in chosen}
    timings["evidence"] = time.perf_counter() - start
    if args.llm_url:
        from clsr.describe import LlmDescriber

        llm = LlmDescriber(args.llm_url, args.llm_model)
        start = time.perf_counter()
        descriptions["llm"] = {l: llm.describe([describe_texts[r] for r in
                                                evidence_describer.top_rows(evidence_describer.activation_column(l))])
                               for l in chosen}
        timings["llm"] = time.perf_counter() - start

    from clsr.evidence import WORD_PATTERN

    held_stems = [frozenset(s for s in map(keyword_describer.stem, WORD_PATTERN.findall(texts[r])) if s) for r in held_rows]
    held_latents, held_activations = latents[held_rows], activations[held_rows]

    def keyword_stems(description: str) -> set[str]:
        stems = set()
        for keyword in description_keywords(description):
            stems |= {s for s in map(keyword_describer.stem, WORD_PATTERN.findall(keyword)) if s}
        return stems

    def aucs(latent: int, description: str) -> tuple[float | None, float | None]:
        column = np.where(held_latents == latent, held_activations, 0).max(axis=1)
        stems = keyword_stems(description)
        scores = np.array([len(stems & passage) for passage in held_stems], np.int64)
        return count_auc(scores, column > 0), count_auc(scores, strong_labels(column))

    results = {}
    for describer, described in descriptions.items():
        per_region = {}
        for r in REGIONS:
            chosen_r = samples[r]
            shuffled = list(np.random.default_rng(args.seed + 1).permutation(chosen_r)) if len(chosen_r) > 1 else chosen_r
            true, fake = [], []
            for latent, other in zip(chosen_r, shuffled):
                true.append(aucs(latent, described[latent]))
                fake.append(aucs(latent, described[other]))

            def mean(pairs, i):
                values = [p[i] for p in pairs if p[i] is not None]
                return round(float(np.mean(values)), 4) if values else None

            entry = {"concepts": len(chosen_r), "auc_fires": mean(true, 0), "auc_fires_shuffled": mean(fake, 0),
                     "auc_strong": mean(true, 1), "auc_strong_shuffled": mean(fake, 1),
                     "mean_df_share": round(float(np.mean([df[l] / len(texts) for l in chosen_r])), 4),
                     "examples": {f"c{l}": described[l] for l in chosen_r[:4]}}
            if describer in kinds:
                counted = [kinds[describer][l] for l in chosen_r]
                entry["share_broad"] = round(counted.count("broad") / max(len(counted), 1), 3)
                entry["share_unclear"] = round(counted.count("unclear") / max(len(counted), 1), 3)
            per_region[r] = entry
        results[describer] = {"regions": per_region, "seconds": round(timings[describer], 1)}
    result = {"dataset": name, "doc_k": args.doc_k, "sae": sae_provenance(sae_path, name), "faithfulness": results}
    print(result, file=sys.stderr, flush=True)
    return result


def markdown(result: dict) -> str:
    lines = ["# Concept descriptions: do they predict activation?", "",
             "Each sampled concept is described from one half of the corpus; on the other half, a passage's score is "
             "the number of the description's keywords it contains. ROC AUC of that score for **fires** (the concept "
             "is in the passage's top-K code) and for **strong** (the passage is in the concept's top decile of the "
             "held-out passages where it fires, against all others); *shuffled*: each concept scored with another "
             "sampled concept's description from the same region. 0.5 is chance; the target is 0.75 in every region.",
             ""]
    for data in result["datasets"]:
        lines += [f"## {data['dataset']}", "", provenance_line(data["sae"], data["dataset"]), "",
                  "| describer | region | concepts | mean df share | AUC fires | shuffled | AUC strong | shuffled "
                  "| broad | unclear |", "|---|---|---|---|---|---|---|---|---|---|"]
        for describer, r in data["faithfulness"].items():
            for region, e in r["regions"].items():
                lines.append(f"| {describer} | {region} | {e['concepts']} | {e['mean_df_share']:.1%} | "
                             f"**{e['auc_fires']}** | {e['auc_fires_shuffled']} | **{e['auc_strong']}** | "
                             f"{e['auc_strong_shuffled']} | {e.get('share_broad', '–')} | {e.get('share_unclear', '–')} |")
        lines += ["", "Examples:", ""]
        for describer, r in data["faithfulness"].items():
            for region, e in r["regions"].items():
                lines.append(f"- {describer}, {region}: " + "; ".join(f"{c}: {d or '(none)'}" for c, d in e["examples"].items()))
        lines += ["", "Describing time for the sampled concepts: " + ", ".join(
            f"{d} {r['seconds']} s" for d, r in data["faithfulness"].items()) + ".", ""]
    machine = result["machine"]
    lines += [f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores), doc K "
              f"{result['datasets'][0]['doc_k']}, top {result['top_passages']} passages per concept.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--sae", help="SAE folder (default: the bundled one)")
    parser.add_argument("--doc-k", type=int, default=64)
    parser.add_argument("--per-region", type=int, default=100)
    parser.add_argument("--top-passages", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--llm-url", help="an OpenAI-compatible endpoint: also measure the LLM describer")
    parser.add_argument("--llm-model")
    parser.add_argument("--out", default="benchmarks/results/descriptions.json")
    args = parser.parse_args(argv)
    if bool(args.llm_url) != bool(args.llm_model):
        parser.error("the LLM describer needs both --llm-url and --llm-model")
    torch.set_num_threads(args.threads)
    sae_path = Path(args.sae) if args.sae else default_sae_path()
    result = {"measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "top_passages": args.top_passages, "per_region": args.per_region,
              "datasets": [measure(d, sae_path, args) for d in args.dataset], "machine": machine_info(),
              "versions": versions()}
    write_report(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
