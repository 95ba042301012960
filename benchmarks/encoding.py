"""Dense encoding speed and numerics of every backend, measured side by side in one run.

    python benchmarks/encoding.py --dataset scifact --out benchmarks/results/encoding.json

For each backend (torch fp32 and bf16, OpenVINO fp32 and bf16, ONNX Runtime fp32 and int8): passages/s on the
same passages (the first ``--passages`` of the corpus, default 600), measured **interleaved**: the
passages are cut into rounds and every backend encodes each round in turn (order rotated), so a
change in machine load hits all backends alike and the ratios hold within the run. Wall time and
the process's CPU time are both recorded, with the load average before and after. Also: cosine to
torch fp32 on those passages (min, mean), single-query latency (p50, one query per call, queries
interleaved the same way), and nDCG@10 on the test queries against a sub-corpus (the timed passages
plus every passage judged for the split), or the whole corpus with ``--full-corpus`` (through the
embedding cache). Writes JSON and a markdown table beside it (same name, ``.md``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import numpy as np
from harness import machine_info, percentile, top_hits, versions, write_report

from clsr.cpu import REPORTED_FLAGS, cpu_flags, cpu_kind, cpu_supports_vnni
from clsr.data import load_corpus, load_qrels, load_topics, resolve
from clsr.encode.dense import DenseEncoder, encode_corpus, encoder_config
from clsr.evaluate import evaluate

HERE = Path(__file__).resolve().parent
# (name, backend, dtype); the first is the reference for cosines and nDCG deltas.
VARIANTS = [("torch-fp32", "torch", "fp32"), ("torch-bf16", "torch", "bf16"), ("openvino-fp32", "openvino", "fp32"),
            ("openvino-bf16", "openvino", "bf16"), ("onnx", "onnx", "auto"), ("onnx-int8", "onnx-int8", "auto")]


def interleaved(encoders: dict[str, DenseEncoder], texts: list[str], rounds: int) -> tuple[dict, dict]:
    """Embeddings of ``texts`` by each encoder and its timings {name: {"wall_s", "cpu_s"}}.

    The texts are split into ``rounds`` consecutive slices; each slice is encoded by every encoder
    in turn, the order rotated by one each round.
    """
    names = list(encoders)
    parts = {name: [] for name in names}
    timings = {name: {"wall_s": 0.0, "cpu_s": 0.0} for name in names}
    for r, chunk in enumerate(np.array_split(np.arange(len(texts)), rounds)):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            parts[name].append(encoders[name].encode_documents([texts[i] for i in chunk]))
            timings[name]["wall_s"] += time.perf_counter() - wall
            timings[name]["cpu_s"] += time.process_time() - cpu
    return {name: np.concatenate(p) for name, p in parts.items()}, timings


def query_latencies_ms(encoders: dict[str, DenseEncoder], queries: list[str]) -> dict[str, list[float]]:
    """Wall time of encoding one query alone, per encoder, in ms; one untimed pass first, then interleaved."""
    for encoder in encoders.values():
        for q in queries[:10]:
            encoder.encode_queries([q])
    times = {name: [] for name in encoders}
    names = list(encoders)
    for n, q in enumerate(queries):
        for name in names[n % len(names):] + names[:n % len(names)]:
            start = time.perf_counter()
            encoders[name].encode_queries([q])
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def token_lengths(encoder: DenseEncoder, texts: list[str]) -> np.ndarray:
    """Untruncated token counts (with special tokens) of ``texts``."""
    return np.array([len(ids) for ids in encoder.tokenizer(texts, truncation=False)["input_ids"]])


def measure(dataset: str, split: str, passages: int, rounds: int, query_count: int, full_corpus: bool,
            batch_size: int, threads: int | None = None, ndcg: bool = True,
            variants: list[str] | None = None) -> dict:
    source = resolve(dataset)
    corpus = load_corpus(source)
    topics, qrels = load_topics(source, split), load_qrels(source, split)
    passages = passages or len(corpus)
    texts = [d.text for d in corpus[:passages]]
    config = encoder_config("minilm")
    # Built before any timing: ONNX export and quantisation happen here on a first run.
    chosen = [v for v in VARIANTS if not variants or v[0] in variants]
    encoders = {name: DenseEncoder(config, backend=backend, dtype=dtype, batch_size=batch_size, threads=threads)
                for name, backend, dtype in chosen}
    reference = chosen[0][0]  # torch fp32 when chosen; else the first, and cosines are to it
    for encoder in encoders.values():  # warm-up: first-call allocations, kernel creation, OpenVINO's compilations
        encoder.encode_documents(texts[:128])

    load_before = os.getloadavg()
    embeddings, timings = interleaved(encoders, texts, rounds)
    load_after = os.getloadavg()
    query_texts = list(topics.values())[:query_count]
    latencies = query_latencies_ms(encoders, query_texts)

    # Retrieval quality: the timed passages plus every judged passage, or the whole corpus.
    qids = list(topics)
    if full_corpus:
        documents = corpus
    else:
        judged = {doc for judgments in qrels.values() for doc in judgments}
        seen = {d.id for d in corpus[:passages]}
        documents = corpus[:passages] + [d for d in corpus[passages:] if d.id in judged and d.id not in seen]
    rows = {}
    for name, encoder in encoders.items():
        if ndcg:
            if full_corpus:
                doc_vectors = np.asarray(encode_corpus(encoder, documents, progress=False).embeddings)
            else:  # the timed passages' vectors plus the judged passages beyond them
                extra = encoder.encode_documents([d.text for d in documents[passages:]])
                doc_vectors = np.concatenate([embeddings[name], extra])
            query_vectors = encoder.encode_queries([topics[q] for q in qids])
            run = top_hits(query_vectors @ doc_vectors.T, qids, [d.id for d in documents], 100)
        cos = (embeddings[name] * embeddings[reference]).sum(1)
        rows[name] = {
            "backend": encoder.backend, "dtype": encoder.dtype, "batch_size": encoder.batch_size,
            "passages_per_s": round(len(texts) / timings[name]["wall_s"], 2),
            "passages_per_cpu_s": round(len(texts) / timings[name]["cpu_s"], 2),
            "wall_s": round(timings[name]["wall_s"], 2), "cpu_s": round(timings[name]["cpu_s"], 2),
            "cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6),
            "query_ms_p50": round(percentile(latencies[name], 0.5), 2),
            "query_ms_p90": round(percentile(latencies[name], 0.9), 2),
            "ndcg@10": round(evaluate(run, qrels, ["ndcg@10"])["ndcg@10"], 4) if ndcg else None,
            "int8_form": ("u8s8" if cpu_supports_vnni() else "u8u8") if encoder.backend == "onnx-int8" else None,
        }
    for row in rows.values():
        row["speed_vs_fp32"] = round(row["passages_per_s"] / rows[reference]["passages_per_s"], 3)
        row["ndcg@10_delta"] = round(row["ndcg@10"] - rows[reference]["ndcg@10"], 4) if ndcg else None

    lengths = token_lengths(encoders[reference], texts)
    flags = cpu_flags()
    import onnxruntime

    return {
        "dataset": str(dataset), "split": split, "passages": len(texts), "rounds": rounds,
        "batch_size": batch_size, "queries_timed": len(query_texts), "ndcg_queries": len(qids),
        "ndcg_documents": len(documents), "ndcg_corpus": "full" if full_corpus else "timed passages + judged passages",
        "max_length": config.max_length,
        "tokens": {"mean": round(float(lengths.mean()), 1), "p50": int(np.median(lengths)),
                   "over_max_length": round(float((lengths > config.max_length).mean()), 4)},
        "threads": {runtime: next((e.threads for e in encoders.values() if e.backend.startswith(prefix)), None)
                    for runtime, prefix in (("torch", "torch"), ("openvino", "openvino"), ("onnxruntime", "onnx"))},
        "reference": reference,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "cpu_flags": {flag: flag in flags for flag in REPORTED_FLAGS}, "cpu_kind": cpu_kind(),
        "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "backends": rows, "machine": machine_info(),
        "versions": {**versions(), "onnxruntime": onnxruntime.__version__},
    }


def markdown(result: dict) -> str:
    flags = ", ".join(f for f, present in result["cpu_flags"].items() if present) or "none"
    load = result["load_average"]
    batches = ", ".join(sorted({f"{r['backend']} {r['batch_size']}" for r in result["backends"].values()}))
    lines = [f"# Dense encoding: {result['dataset']}, {result['passages']} passages, MiniLM "
             f"(max {result['max_length']} tokens), batch {result['batch_size'] or batches}", "",
             f"CPU: {result['machine']['cpu']} ({result['machine']['cores']} cores; flags: {flags}); "
             f"threads: torch {result['threads']['torch']}, OpenVINO {result['threads'].get('openvino', '-')}, "
             f"ONNX Runtime {result['threads']['onnxruntime']}; ×fp32, cosines and Δ are to "
             f"{result.get('reference', 'torch-fp32')}; "
             f"load average (1/5/15 min) {'/'.join(map(str, load['before']))} before, "
             f"{'/'.join(map(str, load['after']))} after; {result['measured']}.", "",
             "| backend | passages/s | ×fp32 | passages per CPU-s | cosine to fp32 min / mean "
             f"| nDCG@10 ({result['ndcg_documents']} docs) | Δ vs fp32 | one query p50 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in result["backends"].items():
        lines.append(f"| {name} | {r['passages_per_s']:.1f} | {r['speed_vs_fp32']:.2f} | {r['passages_per_cpu_s']:.1f} "
                     f"| {r['cosine_min']:.4f} / {r['cosine_mean']:.5f} "
                     + (f"| {r['ndcg@10']:.4f} | {r['ndcg@10_delta']:+.4f} " if r["ndcg@10"] is not None
                        else "| – | – ")
                     + f"| {r['query_ms_p50']:.1f} |")
    t = result["tokens"]
    lines += ["", f"Passages: {t['mean']} tokens on average (median {t['p50']}); "
              f"{t['over_max_length']:.0%} are truncated at {result['max_length']}. nDCG@10 over "
              f"{result['ndcg_queries']} {result['split']} queries against {result['ndcg_corpus']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--passages", type=int, default=600,
                        help="passages timed per backend (default 600; 0 = the whole corpus)")
    parser.add_argument("--backends", nargs="+", choices=[v[0] for v in VARIANTS],
                        help="the variants to run (default: all); cosines are to the first given")
    parser.add_argument("--rounds", type=int, default=6, help="interleaving rounds (default 6)")
    parser.add_argument("--queries", type=int, default=100, help="queries timed one by one (default 100)")
    parser.add_argument("--batch-size", type=int, help="encoder batch size (default: each backend's, as clsr's)")
    parser.add_argument("--threads", type=int, help="intra-op threads of both runtimes (default: torch's, the cores)")
    parser.add_argument("--ndcg", action=argparse.BooleanOptionalAction, default=True,
                        help="measure nDCG@10 (--no-ndcg: speed and cosines only)")
    parser.add_argument("--full-corpus", action="store_true",
                        help="nDCG@10 against the whole corpus (encodes it once per backend, cached)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "encoding.json")
    args = parser.parse_args()
    result = measure(args.dataset, args.split, args.passages, args.rounds, args.queries, args.full_corpus,
                     args.batch_size, args.threads, args.ndcg, args.backends)
    write_report(result, args.out, markdown(result))


if __name__ == "__main__":
    main()
