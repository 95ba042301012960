"""How the concept index's cost grows with the corpus: synthetic concept vectors at 10k, 100k and 1M documents.

    python benchmarks/scaling.py --out benchmarks/results/scaling.json

Each synthetic document has K distinct concepts (default 64, of 8,192) drawn with Zipf-like
frequencies: concept of frequency rank r is drawn with weight r**-s, with s fitted on the real
document frequencies of the bundled SAE's SciFact index (so head, torso and tail look like
SciFact's). Impacts are drawn from SciFact's quantised document impacts. Queries have 128
concepts drawn the same way, each with a per-query 1..255 weight. The index is built exactly as
``clsr index`` builds one (same JsonVectorCollection, same Anserini flags), in a temporary folder.

Reports indexing time, index size and search latency (one thread, top 1000 and top 10) in
absolute terms and per 1,000 documents.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import latencies_ms, machine_info, percentile, versions, write_report

from clsr.index import directory_bytes
from clsr.index.concepts import Quantizer, concept_term
from clsr.index.lucene import index_impact_vectors

HERE = Path(__file__).resolve().parent
N_LATENTS = 8192


def scifact_profile(doc_k: int) -> tuple[float, np.ndarray]:
    """The Zipf exponent of SciFact's concept document frequencies, and its quantised doc impacts."""
    from clsr.data import load_corpus
    from clsr.encode.dense import DenseEncoder, encode_corpus, encoder_config
    from clsr.sae.model import TopKSae, default_sae_path

    sae = TopKSae.load_from_disk(default_sae_path())
    embeddings = encode_corpus(DenseEncoder(encoder_config("minilm")), load_corpus("scifact")).embeddings
    values, indices = sae.encode_numpy(embeddings, doc_k)
    df = np.sort(np.bincount(indices.ravel(), minlength=N_LATENTS))[::-1].astype(float)
    ranks = np.arange(1, N_LATENTS + 1)
    used = df > 0
    # Least squares on log df = c - s log r over the concepts that occur.
    slope = np.polyfit(np.log(ranks[used]), np.log(df[used]), 1)[0]
    impacts = Quantizer.fit(values).quantize(values).ravel()
    return float(-slope), impacts[impacts > 0]


def zipf_rows(n: int, k: int, exponent: float, rng: np.random.Generator, chunk: int = 4096) -> np.ndarray:
    """n rows of k distinct concept ids, concept r drawn with weight r**-exponent (Gumbel top-k trick)."""
    log_weights = (-exponent * np.log(np.arange(1, N_LATENTS + 1))).astype(np.float32)
    permutation = rng.permutation(N_LATENTS)  # frequency rank -> concept id, so ids carry no order
    rows = np.empty((n, k), np.int32)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        uniform = rng.random((size, N_LATENTS), dtype=np.float32)
        keys = log_weights - np.log(-np.log(uniform + np.float32(1e-12)))  # + Gumbel noise
        rows[start:start + size] = permutation[np.argpartition(-keys, k - 1, axis=1)[:, :k]]
    return rows


def measure(n_docs: int, doc_k: int, query_k: int, exponent: float, impacts: np.ndarray, queries: int,
            threads: int, seed: int) -> dict:
    from clsr.jvm import pyserini_lucene

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    latents = zipf_rows(n_docs, doc_k, exponent, rng)
    doc_impacts = rng.choice(impacts, size=latents.shape)
    generate_s = time.perf_counter() - start
    ids = [f"d{i}" for i in range(n_docs)]
    work = Path(tempfile.mkdtemp(prefix=f"clsr-scaling-{n_docs}-", dir=HERE / "work"))
    try:
        postings, seconds = index_impact_vectors(latents, doc_impacts, ids, work / "index", threads=threads,
                                                 progress=True)
        size = directory_bytes(work / "index")
        query_latents = zipf_rows(queries, query_k, exponent, rng)
        query_weights = rng.integers(1, 256, size=query_latents.shape)
        vectors = {f"q{i}": {concept_term(int(l)): int(w) for l, w in zip(row, weights)}
                   for i, (row, weights) in enumerate(zip(query_latents, query_weights))}

        lucene = pyserini_lucene()
        from pyserini.encode import QueryEncoder

        class Lookup(QueryEncoder):  # the query text is its id; its vector is looked up
            def encode(self, text, **kwargs):
                return vectors[text]

        searcher = lucene.LuceneImpactSearcher(str(work / "index"), Lookup())
        top1000 = latencies_ms(lambda q: searcher.search(q, 1000), list(vectors))
        top10 = latencies_ms(lambda q: searcher.search(q, 10), list(vectors))
        searcher.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    index_s = seconds["write_s"] + seconds["lucene_s"]
    thousands = n_docs / 1000
    return {"documents": n_docs, "postings": postings, "generate_s": round(generate_s, 2),
            "write_s": round(seconds["write_s"], 2), "lucene_s": round(seconds["lucene_s"], 2),
            "index_docs_per_s": round(n_docs / index_s, 1), "index_bytes": size,
            "index_s_per_1k_docs": round(index_s / thousands, 4), "bytes_per_1k_docs": round(size / thousands),
            "search_ms_p50": round(percentile(top1000, 0.5), 3), "search_ms_p95": round(percentile(top1000, 0.95), 3),
            "search_ms_p50_top10": round(percentile(top10, 0.5), 3),
            "search_ms_p50_per_1k_docs": round(percentile(top1000, 0.5) / thousands, 5)}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = ["# Scaling: synthetic concept indexes", "",
             f"K={s['doc_k']} concepts per document of {N_LATENTS}, Zipf exponent {s['zipf_exponent']:.3f} "
             f"(fitted on SciFact), {s['queries']} queries of {s['query_k']} concepts, {s['threads']} indexing "
             "thread(s), one search thread.", "",
             "| documents | postings | index s | docs/s | index MB | bytes/doc | search p50 ms (top 1000) | p95 ms "
             "| top-10 p50 ms | p50 ms per 1k docs |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(
            f"| {row['documents']:,} | {row['postings']:,} | {row['write_s'] + row['lucene_s']:.1f} "
            f"| {row['index_docs_per_s']:,.0f} | {row['index_bytes'] / 2**20:.1f} "
            f"| {row['bytes_per_1k_docs'] / 1000:.1f} "
            f"| {row['search_ms_p50']:.2f} | {row['search_ms_p95']:.2f} | {row['search_ms_p50_top10']:.2f} "
            f"| {row['search_ms_p50_per_1k_docs']:.4f} |")
    machine, v = result["machine"], result["versions"]
    lines += ["", "Index time is writing the JsonVectorCollection plus Anserini indexing and merging to one segment "
              "(dense and SAE encoding excluded: they are linear in the corpus and measured in quality.py).",
              "", f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores, "
              f"{machine['memory_gib']} GiB). Pyserini {v['pyserini']} (Anserini {v['anserini']}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--doc-k", type=int, default=64)
    parser.add_argument("--query-k", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="indexing threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    (HERE / "work").mkdir(exist_ok=True)
    exponent, impacts = scifact_profile(args.doc_k)
    rows = []
    for n_docs in args.sizes:
        rows.append(measure(n_docs, args.doc_k, args.query_k, exponent, impacts, args.queries, args.threads,
                            args.seed))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "settings": {"doc_k": args.doc_k, "query_k": args.query_k, "queries": args.queries,
                           "threads": args.threads, "zipf_exponent": round(exponent, 4), "seed": args.seed},
              "rows": rows, "machine": machine_info(), "versions": versions()}
    write_report(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
