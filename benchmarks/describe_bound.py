"""What describing from a bounded subset costs in faithfulness: held-out AUC, time and memory, full pass against bound.

    python benchmarks/describe_bound.py --dataset scifact --dataset nfcorpus --bound 1000 --bound 500 \\
        --out benchmarks/results/describe-bound.json [--per-region 100]

Past `max_passages` passages (clsr.interpret.describers.DESCRIBE_PASSAGES, 20,000) the evidence describer works on a
subset: a seeded random sample of `max_passages` passages plus every described concept's top passages
(`describe_subset`), its word evidence from a fixed pool of a fifth of the sample and each concept's
`EVIDENCE_TOP` (2) strongest passages (`evidence_pool`). SciFact and NFCorpus are far below the default bound, so
here the bound is forced. The measurement is benchmarks/descriptions.py's (its functions, not a copy): the
corpus is split in two seeded halves,
up to `--per-region` concepts per region (firing in both halves) are described from the first half, and a
simulator that reads only the description's text and the passage's text predicts each held-out passage's
activation; ROC AUC for *fires* and *strong*, under the embedding simulator and the keyword count. Each
configuration describes the same sampled concepts from the describe half: **full** (every passage of the half, as
today), or **bound N** (the half's subset for N: N sampled passages plus the sampled concepts' top passages, as
`build_catalogue` takes every used concept's). Since a small corpus's top passages cover most of it, the subset
holds the top passages of the *described* concepts only, which is what keeps it below the half here, as it is far
below a million-passage corpus. A bound at or above the half's size would change nothing and is skipped. With 300
sampled concepts their top passages are most of the subset (about 1,650 of SciFact's half), the random sample the
rest: at bound 500 about the mix a million-passage corpus gets at the default bound (20,000 sampled passages beside
up to 81,920 top passages of the bundled SAE's 8,192 concepts).

Each configuration runs in its own process (`--worker`), so its peak RSS (`ru_maxrss`) is its own; its time is the
describing alone (the subset, the describer's stems, the evidence pass over the pools, choosing the words), not
loading the model or the corpus. Passages given to the evidence pass are counted (`evidence passes`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from descriptions import REGIONS, HeldOut, index_embeddings, region_scores, split_and_sample
from harness import build_baselines, build_concept_index_for, machine_info, versions, write_report

from clsr.cpu import cpu_flags
from clsr.data import resolve
from clsr.index import DocCodes
from clsr.interpret.describe import KeywordDescriber
from clsr.interpret.describers import (
    DESCRIBE_PASSAGES,
    EmbeddingSimulator,
    EvidenceDescriber,
    corpus_df_shares,
    describe_subset,
    evidence_pool,
    unit_rows,
)
from clsr.sae.model import default_sae_path

from provenance import provenance_line, sae_provenance

HERE = Path(__file__).resolve().parent


class Setting:
    """What both the parent and each worker need: the index, its texts and codes, the halves and the sample."""

    def __init__(self, dataset: str, sae_path: Path, doc_k: int, per_region: int, seed: int):
        source = resolve(dataset)
        self.name = Path(str(source)).name
        self.baselines = build_baselines(str(source), HERE / "work" / self.name)
        self.index_dir = HERE / "work" / self.name / f"concepts-k{doc_k}-{sae_path.name}"
        build_concept_index_for(self.baselines, self.index_dir, sae_path, doc_k, reuse=True)
        codes = DocCodes(self.index_dir)
        self.ids = codes.ids
        by_id = {d.id: d.text for d in self.baselines.documents}
        self.texts = [by_id[i] for i in codes.ids]
        self.latents = np.asarray(codes.latents, np.int64)
        self.activations = np.asarray(codes.activations, np.float32)
        self.describe_rows, self.held_rows, self.samples, self.df = split_and_sample(
            self.latents, self.activations, per_region, seed)
        self.chosen = [latent for r in REGIONS for latent in self.samples[r]]


def describe(setting: Setting, sae_path: Path, bound: int | None, top_passages: int, seed: int) -> dict:
    """Labels of the sampled concepts from the describe half, whole (`bound` None) or its subset for `bound`:
    {"descriptions", "kinds" (by latent), "subset" (passages the describer saw), "evidence_passes", "seconds"}."""
    from clsr.interpret.evidence import EvidenceExplainer
    from clsr.sae.model import TopKSae

    half = setting.describe_rows
    stem = KeywordDescriber(()).stem  # only the stemmer (Lucene's English analyser), as build_catalogue takes it
    explainer = EvidenceExplainer(setting.baselines.encoder, TopKSae.load_from_disk(sae_path))
    embeddings = index_embeddings(setting.baselines, setting.ids)  # the cache's (n, d), read as indexing wrote it
    simulator = EmbeddingSimulator(setting.baselines.encoder.encode)
    start = time.perf_counter()
    half_latents, half_activations = setting.latents[half], setting.activations[half]
    within = describe_subset(half_latents, half_activations, top_passages, bound, concepts=setting.chosen, seed=seed)
    rows = half if within is None else half[within]
    extra = ({} if within is None else
             {"corpus_rows": within, "df_shares": corpus_df_shares(half_latents, half_activations),
              "evidence_pool": evidence_pool(len(half), within, bound, seed)})
    describer = EvidenceDescriber(explainer, [setting.texts[r] for r in rows], setting.latents[rows],
                                  setting.activations[rows], stem, simulator=simulator,
                                  embeddings=embeddings[rows], top_passages=top_passages, **extra)
    pools = describer.pools(setting.chosen)
    passes = len(set().union(*(rows_of.tolist() for pool in pools for rows_of in pool.values())))
    labels = describer.describe_latents(setting.chosen)
    return {"descriptions": {str(l): labels[l]["description"] for l in setting.chosen},
            "kinds": {str(l): labels[l]["kind"] for l in setting.chosen},
            "subset": len(rows), "evidence_passes": passes, "seconds": round(time.perf_counter() - start, 1)}


def worker(argv: list[str]) -> None:
    """`--worker CONFIG OUT`: one configuration in this process; its result and peak RSS written to OUT (JSON)."""
    import torch

    config = json.loads(argv[0])
    torch.set_num_threads(config["threads"])
    sae_path = Path(config["sae"])
    setting = Setting(config["dataset"], sae_path, config["doc_k"], config["per_region"], config["seed"])
    result = describe(setting, sae_path, config["bound"], config["top_passages"], config["seed"])
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    Path(argv[1]).write_text(json.dumps(result))


def run_worker(config: dict) -> dict:
    """One configuration in a fresh process (so that its peak RSS is its own); raises if the worker fails."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        # One hash seed for every worker: the describer breaks a few ties between contrast words in the order of
        # Python's string sets, so without it two runs of the same configuration differ in a label or two.
        env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
        subprocess.run([sys.executable, __file__, "--worker", json.dumps(config), str(out)], check=True, env=env)
        return json.loads(out.read_text())


def measure(dataset: str, sae_path: Path, args) -> dict:
    setting = Setting(dataset, sae_path, args.doc_k, args.per_region, args.seed)
    stem = KeywordDescriber(()).stem
    simulator = EmbeddingSimulator(setting.baselines.encoder.encode)
    embeddings = unit_rows(index_embeddings(setting.baselines, setting.ids))
    aucs = HeldOut(setting.texts, setting.held_rows, setting.latents, setting.activations, embeddings, stem,
                   simulator).aucs
    runs, full = {}, {}
    for bound in [None, *(b for b in args.bound if b < len(setting.describe_rows))]:
        config = {"dataset": dataset, "sae": str(sae_path), "doc_k": args.doc_k, "per_region": args.per_region,
                  "seed": args.seed, "bound": bound, "top_passages": args.top_passages, "threads": args.threads}
        found = run_worker(config)
        described = {int(l): d for l, d in found.pop("descriptions").items()}
        kinds = {int(l): k for l, k in found.pop("kinds").items()}
        full = full or described  # the first run is the full pass
        name = "full" if bound is None else f"bound {bound}"
        runs[name] = {"bound": bound, **found,
                      # How many labels the subset changed at all (1.0 for the full pass itself).
                      "same_description": round(float(np.mean([described[l] == full[l] for l in setting.chosen])), 3),
                      "regions": region_scores(described, setting.samples, aucs, setting.df, len(setting.texts),
                                               args.seed, kinds)}
        print(name, {k: v for k, v in runs[name].items() if k != "regions"}, file=sys.stderr, flush=True)
    return {"dataset": setting.name, "doc_k": args.doc_k, "passages": len(setting.texts),
            "describe_passages": len(setting.describe_rows), "held_out_passages": len(setting.held_rows),
            "concepts": len(setting.chosen), "sae": sae_provenance(sae_path, setting.name), "runs": runs}


def markdown(result: dict) -> str:
    lines = ["# Describing with a bounded cost: held-out faithfulness, time and memory", "",
             f"Past `max_passages` passages (default {DESCRIBE_PASSAGES:,}) the evidence describer works on a seeded "
             "sample of that many plus every described concept's top passages, its word evidence (the encoder pass) "
             "from a fixed pool of a fifth of the sample and each concept's 2 strongest passages. Here the bound is "
             "forced on "
             "collections below it: the sampled concepts are described from one half of the corpus, **full** (every "
             "passage of the half, as today) or **bound N** (N sampled passages of the half plus the sampled concepts' "
             "top passages), and judged on the other half as in [descriptions](descriptions.md): ROC AUC of the "
             "embedding simulator's and the keyword count's prediction of where the concept fires and fires "
             "strongly, from the description's text and the passage's text alone. *subset*: passages the describer "
             "saw; *evidence passes*: passages given to the encoder for word evidence; *same*: share of labels "
             "identical to the full pass's; time: the describing alone; peak RSS: the whole process (model "
             "included).", ""]
    for data in result["datasets"]:
        lines += [f"## {data['dataset']}", "", provenance_line(data["sae"], data["dataset"]) + f" {data['passages']:,} "
                  f"passages: {data['describe_passages']:,} to describe from, {data['held_out_passages']:,} held out; "
                  f"{data['concepts']} sampled concepts.", "",
                  "| run | region | embedding: fires / strong | keyword count: fires / strong | shuffled (embedding "
                  "fires) | broad | unclear |", "|---|---|---|---|---|---|---|"]
        for name, run in data["runs"].items():
            for region, e in run["regions"].items():
                lines.append(f"| {name} | {region} | **{e['auc_embedding_fires']}** / {e['auc_embedding_strong']} | "
                             f"{e['auc_count_fires']} / {e['auc_count_strong']} | "
                             f"{e['auc_embedding_fires_shuffled']} | {e['share_broad']} | {e['share_unclear']} |")
        lines += ["", "| run | subset | evidence passes | same | seconds | peak RSS MiB | lowest embedding fires "
                  "AUC | largest drop against full (embedding fires, any region) |",
                  "|---|---|---|---|---|---|---|---|"]
        full = data["runs"]["full"]["regions"]
        for name, run in data["runs"].items():
            lowest = min(e["auc_embedding_fires"] for e in run["regions"].values())
            drop = max(full[r]["auc_embedding_fires"] - e["auc_embedding_fires"] for r, e in run["regions"].items())
            lines.append(f"| {name} | {run['subset']:,} | {run['evidence_passes']:,} | {run['same_description']:.0%} | "
                         f"{run['seconds']} | {run['peak_rss_mib']:,.0f} | {lowest} | {drop:+.4f} |")
        lines.append("")
    machine = result["machine"]
    lines += [f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores, shared with other "
              f"work, `nice -n 10`), {result['threads']} torch thread(s), CPU flags: "
              f"{', '.join(result['cpu_flags'])}; doc K {result['datasets'][0]['doc_k']}, top "
              f"{result['top_passages']} passages per concept, up to {result['per_region']} concepts per region; "
              f"clsr {result['versions']['clsr']}, torch {result['versions']['torch']}, openvino "
              f"{result['versions']['openvino']}, numpy {result['versions']['numpy']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--bound", action="append", type=int,
                        help="max_passages forced on the describe half (repeatable; default 1000 and 500: below "
                             "SciFact's and NFCorpus's halves of 2,591 and 1,816 passages)")
    parser.add_argument("--sae", help="SAE folder (default: the bundled one)")
    parser.add_argument("--doc-k", type=int, default=64)
    parser.add_argument("--per-region", type=int, default=100)
    parser.add_argument("--top-passages", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--out", default="benchmarks/results/describe-bound.json")
    args = parser.parse_args(argv)
    args.bound = args.bound or [1000, 500]
    sae_path = Path(args.sae) if args.sae else default_sae_path()
    result = {"measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "top_passages": args.top_passages, "per_region": args.per_region, "threads": args.threads,
              "bounds": args.bound, "datasets": [measure(d, sae_path, args) for d in args.dataset],
              "machine": machine_info(),
              "cpu_flags": sorted(f for f in cpu_flags() if f in {"avx2", "avx512f", "avx512_bf16", "amx_tile"}),
              "versions": versions()}
    write_report(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
