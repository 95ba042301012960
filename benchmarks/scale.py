"""Scaling out: Milvus as the served engine, Ray for encoding (issue 15).

    python benchmarks/scale.py --out benchmarks/results/scale.json      # needs clsr[milvus,ray]

* **Milvus** (Lite, embedded, at a file path): export time, search p50/p95 (one query at a time,
  query encoding excluded: both engines get the same integer query vectors) and recall of Lucene's
  top 1000 / top 10, on SciFact (a concept index, exported with ``clsr.search.milvus.export_index``) and
  on the synthetic 100k / 1M sets of ``benchmarks/scaling.py`` (same Zipf-like generator; the
  dense field holds random vectors of the same size, so insertion moves as many bytes as a real
  export). Lucene's reference run is cut by clsr's tie rule (searched 100 deeper, trec_eval order).
* **Ray**: passages/s encoding (MiniLM + SAE codes) in one process against Ray local mode, and
  Ray's start-up; from the per-worker rate, what MS MARCO's 8.8M passages would take on N workers.

Writes JSON and a markdown table (``--out``), with the machine and versions.
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

from clsr.evaluate import trec_eval_order
from clsr.index.concepts import concept_term

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scaling import scifact_profile, zipf_rows  # noqa: E402  (the synthetic generator, one place)

MSMARCO_PASSAGES = 8_841_823


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    result = versions()
    for package in ("pymilvus", "milvus-lite", "ray"):
        try:
            result[package] = version(package)
        except PackageNotFoundError:
            result[package] = None
    return result


def _recall(reference: list[list[str]], found: list[list[str]], k: int) -> float:
    scores = [len(set(r[:k]) & set(f[:k])) / len(r[:k]) for r, f in zip(reference, found) if r]
    return round(float(np.mean(scores)), 4) if scores else 1.0


def _compare(lucene_search, milvus_search, vectors: list[dict[str, int]]) -> dict:
    """Latency of both engines on the same query vectors, and Milvus's recall of Lucene's (tie-ruled) run."""
    lucene_ms = latencies_ms(lambda v: lucene_search(v, 1000), vectors)
    milvus_ms = latencies_ms(lambda v: milvus_search(v, 1000), vectors)
    milvus10_ms = latencies_ms(lambda v: milvus_search(v, 10), vectors)
    lucene10_ms = latencies_ms(lambda v: lucene_search(v, 10), vectors)
    reference = [trec_eval_order(lucene_search(v, 1100))[:1000] for v in vectors]
    found = [milvus_search(v, 1000) for v in vectors]
    identical = sum([tuple(h) for h in r] == [tuple(h) for h in f] for r, f in zip(reference, found))
    ids = lambda run: [[d for d, _ in hits] for hits in run]  # noqa: E731
    return {"queries": len(vectors), "identical_runs": identical,
            "recall_at_1000": _recall(ids(reference), ids(found), 1000),
            "recall_at_10": _recall(ids(reference), ids(found), 10),
            "milvus_ms_p50": round(percentile(milvus_ms, 0.5), 2),
            "milvus_ms_p95": round(percentile(milvus_ms, 0.95), 2),
            "milvus_top10_ms_p50": round(percentile(milvus10_ms, 0.5), 2),
            "lucene_ms_p50": round(percentile(lucene_ms, 0.5), 2),
            "lucene_ms_p95": round(percentile(lucene_ms, 0.95), 2),
            "lucene_top10_ms_p50": round(percentile(lucene10_ms, 0.5), 2)}


def lucene_vector_search(index_dir: Path):
    """(Anserini's SimpleImpactSearcher on ``index_dir``, search(vector {term: impact}, k) -> [(docid, score)]):
    integer query weights straight to Lucene, with no query encoder (for index folders without a manifest)."""
    from clsr.jvm import java_class, pyserini_lucene

    pyserini_lucene()  # the JVM, the clsr way
    from jnius import autoclass

    lucene = java_class("io.anserini.search.SimpleImpactSearcher")(str(index_dir))
    HashMap, Integer = autoclass("java.util.HashMap"), autoclass("java.lang.Integer")

    def search(vector, k):
        java_map = HashMap()
        for term, weight in vector.items():
            java_map.put(term, Integer(int(weight)))
        return [(h.docid, float(h.score)) for h in lucene.search(java_map, k)]

    return lucene, search


def _milvus_vector_search(client, collection: str):
    from clsr.index.concepts import concept_latent
    from clsr.search.milvus import CONCEPTS, MAX_LIMIT, TIE_MARGIN

    def search(vector: dict[str, int], k: int) -> list[tuple[str, float]]:
        data = [{concept_latent(t): float(w) for t, w in vector.items()}]
        hits = client.search(collection, data=data, anns_field=CONCEPTS, limit=min(k + TIE_MARGIN, MAX_LIMIT),
                             search_params={"metric_type": "IP", "params": {}}, output_fields=[])[0]
        return trec_eval_order([(str(h["id"]), float(h["distance"])) for h in hits])[:k]
    return search


def scifact_row(index_dir: str, uri: str, queries: int) -> dict:
    from clsr.data import load_topics
    from clsr.search import ClsrSearcher
    from clsr.search.milvus import MilvusSearcher, export_index

    record = export_index(index_dir, uri, "scifact", overwrite=True, progress=False)
    lucene = ClsrSearcher(index_dir)
    milvus = MilvusSearcher(uri, "scifact")
    topics = list(load_topics("scifact", "test").values())[:queries]
    with lucene.query_encoder.encoded(topics):
        vectors = [lucene.searchable(lucene.query_encoder.encode(t)) for t in topics]
    row = _compare(lambda v, k: [tuple(h) for h in lucene.search_vector(v, k)],
                   lambda v, k: [tuple(h) for h in milvus.search_vector(v, k)], vectors)
    return {"set": "SciFact (K=64, shipped SAE)", "documents": record["documents"],
            "export_s": record["export_seconds"],
            "export_docs_per_s": round(record["documents"] / record["export_seconds"]),
            **row}


def synthetic_row(n_docs: int, uri: str, exponent: float, impacts: np.ndarray, queries: int, doc_k: int,
                  query_k: int, seed: int, dim: int = 384) -> dict:
    from clsr.index.lucene import index_impact_vectors
    from clsr.search.milvus import milvus_client, registered, write_collection

    rng = np.random.default_rng(seed)
    latents = zipf_rows(n_docs, doc_k, exponent, rng)
    doc_impacts = rng.choice(impacts, size=latents.shape)
    ids = [f"d{i}" for i in range(n_docs)]

    def rows(start, stop):
        vectors = [{int(l): float(w) for l, w in zip(ls, ws)}
                   for ls, ws in zip(latents[start:stop], doc_impacts[start:stop])]
        return vectors, rng.standard_normal((stop - start, dim), dtype=np.float32)

    name = f"synthetic_{n_docs}"
    start = time.perf_counter()
    write_collection(uri, name, {"format": "synthetic"}, ids, rows, dim, overwrite=True, progress=True)
    export_s = time.perf_counter() - start
    client = milvus_client(uri)
    physical = registered(client, name)
    start = time.perf_counter()
    client.load_collection(physical)
    load_s = time.perf_counter() - start

    work = Path(tempfile.mkdtemp(prefix=f"clsr-scale-{n_docs}-", dir=HERE / "work"))
    try:
        index_impact_vectors(latents, doc_impacts, ids, work / "index", threads=2, progress=True)
        query_latents = zipf_rows(queries, query_k, exponent, rng)
        query_weights = rng.integers(1, 256, size=query_latents.shape)
        vectors = [{concept_term(int(l)): int(w) for l, w in zip(row, weights)}
                   for row, weights in zip(query_latents, query_weights)]
        lucene, lucene_search = lucene_vector_search(work / "index")
        row = _compare(lucene_search, _milvus_vector_search(client, physical), vectors)
        lucene.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    client.drop_collection(physical)
    return {"set": f"synthetic {n_docs // 1000}k", "documents": n_docs, "export_s": round(export_s, 1),
            "export_docs_per_s": round(n_docs / export_s), "load_s": round(load_s, 1), **row}


def encoding_rows(passages: int, workers: int) -> dict:
    """Passages/s, MiniLM fp32 + SAE codes (K=64): one process (torch on ``workers`` threads) and Ray local mode."""
    import torch

    from clsr.data import load_corpus
    from clsr.encode.dense import DenseEncoder, encoder_config
    from clsr.encode.ray import encode_with_ray
    from clsr.sae.model import TopKSae, default_sae_path

    documents = load_corpus("scifact")[:passages]
    work = Path(tempfile.mkdtemp(prefix="clsr-scale-ray-", dir=HERE / "work"))
    try:
        corpus = work / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in documents))
        threads = torch.get_num_threads()
        torch.set_num_threads(workers)  # thread scaling: one process gets the cores Ray's workers get
        start = time.perf_counter()
        encoder = DenseEncoder(encoder_config("minilm"), dtype="fp32")
        sae = TopKSae.load_from_disk(default_sae_path())
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        sae.encode_numpy(encoder.encode_documents([d.text for d in documents]), 64)
        single_s = time.perf_counter() - start
        torch.set_num_threads(threads)
        meta = encode_with_ray(str(corpus), encoder_config("minilm").to_dict(), work / "shards", workers=workers,
                               dtype="fp32", sae_path=default_sae_path(), doc_k=64, progress=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"passages": passages, "workers": workers, "single_process_load_s": round(load_s, 2),
            "single_process_docs_per_s": round(passages / single_s, 2), "ray_start_s": meta["ray_start_s"],
            "ray_encode_s": meta["encode_s"], "ray_docs_per_s": meta["docs_per_s"],
            "ray_docs_per_s_per_worker": round(meta["docs_per_s"] / workers, 2)}


def on_paper(per_worker: float, workers=(1, 8, 32, 128, 512)) -> list[dict]:
    return [{"workers": n, "hours": round(MSMARCO_PASSAGES / (per_worker * n) / 3600, 1)} for n in workers]


def markdown(result: dict) -> str:
    lines = ["# Scaling out: Milvus and Ray", "",
             "Milvus Lite (embedded, a file path), `SPARSE_INVERTED_INDEX` with `TAAT_NAIVE`, metric IP; one query "
             "at a time, query encoding excluded (both engines get the same integer query vectors); recall is of "
             "Lucene's run cut by clsr's tie rule. Export = writing every passage's impacts and decoded embedding, "
             "flushed.", "",
             "| set | passages | export s | rows/s | Milvus p50 / p95 ms (top 1000) | Milvus p50 ms (top 10) "
             "| Lucene p50 / p95 ms (top 1000) | Lucene p50 ms (top 10) | recall@1000 | recall@10 | identical runs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["milvus"]:
        lines.append(f"| {r['set']} | {r['documents']:,} | {r['export_s']:.1f} | {r['export_docs_per_s']:,} "
                     f"| {r['milvus_ms_p50']:.1f} / {r['milvus_ms_p95']:.1f} | {r['milvus_top10_ms_p50']:.1f} "
                     f"| {r['lucene_ms_p50']:.1f} / {r['lucene_ms_p95']:.1f} | {r['lucene_top10_ms_p50']:.1f} "
                     f"| {r['recall_at_1000']:.4f} | {r['recall_at_10']:.4f} | {r['identical_runs']}/{r['queries']} |")
    e = result.get("encoding")
    if e:
        lines += ["", f"Encoding {e['passages']} SciFact passages (MiniLM fp32 + SAE codes at K=64) with "
                  f"{e['workers']} workers: one process with that many torch threads, against Ray local mode with "
                  "that many one-thread actors (this is a thread-scaling measurement; everything else ran with "
                  "OMP_NUM_THREADS=1).", "",
                  "| path | passages/s | start-up s |", "|---|---|---|",
                  f"| one process, {e['workers']} threads | {e['single_process_docs_per_s']:.1f} | "
                  f"{e['single_process_load_s']:.1f} (models) |",
                  f"| Ray local, {e['workers']} actors | {e['ray_docs_per_s']:.1f} | {e['ray_start_s']:.1f} (ray.init; "
                  "actors load their models inside the encode time) |", "",
                  f"MS MARCO's {MSMARCO_PASSAGES:,} passages at the measured {e['ray_docs_per_s_per_worker']:.1f} "
                  "passages/s per one-core worker (on paper, linear scaling, encoding only):", "",
                  "| workers | hours |", "|---|---|"]
        lines += [f"| {row['workers']} | {row['hours']:,} |" for row in result["msmarco_on_paper"]]
    machine, v = result["machine"], result["versions"]
    lines += ["", f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores, "
              f"{machine['memory_gib']} GiB), shared with other work; pymilvus {v['pymilvus']}, milvus-lite "
              f"{v['milvus-lite']}, Ray {v['ray']}, Pyserini {v['pyserini']} (Anserini {v['anserini']}), torch "
              f"{v['torch']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scifact-index", help="a SciFact concept index (K=64); built if absent")
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--doc-k", type=int, default=64)
    parser.add_argument("--query-k", type=int, default=128)
    parser.add_argument("--encode-passages", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-encoding", action="store_true")
    parser.add_argument("--encoding-only", action="store_true",
                        help="measure encoding only and add it to the Milvus rows already in --out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    (HERE / "work").mkdir(exist_ok=True)
    if args.encoding_only:
        result = json.loads(Path(args.out).read_text())
        result["encoding"] = encoding_rows(args.encode_passages, args.workers)
        result["msmarco_on_paper"] = on_paper(result["encoding"]["ray_docs_per_s_per_worker"])
        result["encoding_measured"] = datetime.date.today().isoformat()
        write_report(result, Path(args.out), markdown(result))
        return
    index_dir = args.scifact_index or str(HERE / "work" / "scifact" / "concepts-k64")
    if not Path(index_dir, "clsr-index.json").exists():
        from harness import build_baselines, build_concept_index_for

        from clsr.sae.model import default_sae_path

        build_concept_index_for(build_baselines("scifact", HERE / "work" / "scifact"), Path(index_dir),
                                default_sae_path(), args.doc_k)
    uri = str(Path(tempfile.mkdtemp(prefix="clsr-scale-milvus-", dir=HERE / "work")) / "milvus.db")
    result = {"measured": datetime.date.today().isoformat(), "machine": machine_info(), "versions": _versions(),
              "settings": vars(args), "milvus": []}
    result["milvus"].append(scifact_row(index_dir, uri, args.queries))
    print(json.dumps(result["milvus"][-1]), file=sys.stderr, flush=True)
    if args.sizes:
        exponent, impacts = scifact_profile(args.doc_k)
        for n_docs in args.sizes:
            result["milvus"].append(synthetic_row(n_docs, uri, exponent, impacts, args.queries, args.doc_k,
                                                  args.query_k, args.seed))
            print(json.dumps(result["milvus"][-1]), file=sys.stderr, flush=True)
            write_report(result, Path(args.out), markdown(result))  # partial results survive a long run
    if not args.skip_encoding:
        result["encoding"] = encoding_rows(args.encode_passages, args.workers)
        result["msmarco_on_paper"] = on_paper(result["encoding"]["ray_docs_per_s_per_worker"])
    shutil.rmtree(Path(uri).parent, ignore_errors=True)
    write_report(result, Path(args.out), markdown(result))


if __name__ == "__main__":
    main()
