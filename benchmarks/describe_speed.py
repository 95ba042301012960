"""How long describing every concept an index uses takes, and how it grows with the corpus.

    python benchmarks/describe_speed.py --dataset scifact --sizes 1000 2500 0 --dataset nfcorpus --sizes 0 \\
        --out benchmarks/results/describe-speed.json

For each dataset and size (0: the whole corpus; else its first N passages), a doc-K 128 concept index
(`clsr index`'s default) is built with the bundled SAE from the cached embeddings, and then described as
`clsr index` describes it (`clsr.interpret.describe.describe_index`, the evidence describer, with the
embeddings the build had). The time is wall clock for the whole catalogue: reading the corpus, the Lucene
stemmer, the word-evidence encoder pass, the simulator's word vectors, choosing every concept's words and
writing concepts.jsonl. Run alone (the machine's cores free), fp32.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
from harness import machine_info, versions, write_report

from clsr.cpu import cpu_flags
from clsr.data import load_corpus, resolve
from clsr.encode.dense import DenseEncoder, encode_corpus, encoder_config
from clsr.index import build_concept_index
from clsr.sae.model import TopKSae, default_sae_path

HERE = Path(__file__).resolve().parent


def measure(dataset: str, size: int, encoder, work: Path) -> dict:
    documents = load_corpus(str(resolve(dataset)))
    encoded = encode_corpus(encoder, documents, progress=False)  # the cache: what the index build encoded
    count = size or len(documents)
    documents = documents[:count]
    name = f"{Path(str(resolve(dataset))).name}-{count}"
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "title": "", "text": d.text}) + "\n" for d in documents))
    sae_path = default_sae_path()
    build_concept_index([d.id for d in documents], np.asarray(encoded.embeddings[:count]), folder / "index",
                        sae=TopKSae.load_from_disk(sae_path), sae_path=sae_path, encoder=encoder.config.to_dict(),
                        encoding=encoder.encoding, doc_k=128, source=str(corpus), overwrite=True, progress=False)
    from clsr.interpret.describe import describe_index

    start = time.perf_counter()
    entries = describe_index(folder / "index", embeddings=np.asarray(encoded.embeddings[:count]), progress=False)
    seconds = time.perf_counter() - start
    used = [e for e in entries if e.df]
    kinds = {kind: sum(1 for e in used if e.label and e.label["kind"] == kind) for kind in ("specific", "broad",
                                                                                           "unclear")}
    return {"dataset": Path(str(resolve(dataset))).name, "passages": count, "used_concepts": len(used),
            "seconds": round(seconds, 1), "ms_per_concept": round(1000 * seconds / max(len(used), 1), 1),
            "kinds": kinds, "examples": {e.concept: e.description for e in sorted(used, key=lambda e: e.rank)[:3]}}


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = ["# Describing every used concept: time and growth with the corpus", "",
             "`describe_index` as `clsr index` runs it (evidence describer, words chosen for both simulators), on a "
             "doc-K 128 index built with the bundled SAE; wall clock for the whole catalogue, run alone.", "",
             "| collection | passages | used concepts | seconds | ms per concept | specific / broad / unclear |",
             "|---|---|---|---|---|---|"]
    for row in result["runs"]:
        k = row["kinds"]
        lines.append(f"| {row['dataset']} | {row['passages']} | {row['used_concepts']} | **{row['seconds']}** | "
                     f"{row['ms_per_concept']} | {k['specific']} / {k['broad']} / {k['unclear']} |")
    lines += ["", f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores, "
              f"{result['threads']} torch threads), CPU flags: {', '.join(result['cpu_flags'])}; encoder "
              f"{result['encoding']['backend']} {result['encoding']['dtype']}; clsr {result['versions']['clsr']}, "
              f"torch {result['versions']['torch']}, openvino {result['versions']['openvino']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--sizes", action="append", nargs="+", type=int,
                        help="passages per run for the dataset before it (0: all); default all")
    parser.add_argument("--out", default="benchmarks/results/describe-speed.json")
    args = parser.parse_args(argv)
    sizes = args.sizes or [[0]] * len(args.dataset)
    encoder = DenseEncoder(encoder_config("minilm"), dtype="fp32")
    flags = sorted(f for f in cpu_flags() if f in {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile",
                                                   "amx_bf16"})
    runs = [measure(dataset, size, encoder, HERE / "work" / "describe-speed")
            for dataset, chosen in zip(args.dataset, sizes) for size in chosen]
    result = {"measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "runs": runs,
              "threads": torch.get_num_threads(), "encoding": encoder.encoding, "cpu_flags": flags,
              "machine": machine_info(), "versions": versions()}
    write_report(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
