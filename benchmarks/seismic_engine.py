"""The exported SparseEncoder through sentence-transformers' Seismic route, beside clsr's Lucene index, on SciFact.

Builds (or reuses) SciFact's concept index with the shipped SAE (zero-shot on SciFact: it never saw it), doc K and
query K 128, on MiniLM through the torch fp32 backend (the path sentence-transformers runs, so both engines get
the same codes), exports it with ``clsr export sentence-transformers``, and measures on the 300 test queries:

* Seismic (``sentence_transformers.sparse_encoder.search_engines.semantic_search_seismic``, ``pip install
  'clsr[seismic]'``) on the float activations, with the library's default search settings (query_cut 10,
  heap_factor 0.7) and with all 128 query concepts (query_cut 128, heap_factor 0.9);
* Lucene: clsr's impact index (8-bit impacts), exact;
* exact float: the brute-force dot product of the same float codes, which Seismic approximates.

Recall@k is the share of a reference run's top k that a run also has in its top k, averaged over queries.
Latency is search alone, one query at a time on one thread, queries encoded beforehand; the query encoding
(``encode_query``, one query at a time) is reported beside it.

The corpus's codes come from the exported ``SparseAutoEncoder`` module applied to the cached torch-fp32 MiniLM
embeddings; tests/test_sentence_transformers.py shows these equal ``encode_document``'s (encoding 5,183 passages
again through sentence-transformers would cost minutes and change nothing).

    python benchmarks/seismic_engine.py [--work runs/bench/seismic] [--out benchmarks/results/seismic.json]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from harness import latencies_ms, machine_info, percentile, versions, write_report

from clsr.cpu import cpu_flags, cpu_kind
from clsr.data import load_corpus, load_qrels, load_topics, resolve
from clsr.encode.dense import DenseEncoder, encode_corpus, encoder_config
from clsr.evaluate import evaluate
from clsr.index import build_concept_index
from clsr.index.manifest import MANIFEST_NAME
from clsr.sae.model import TopKSae, default_sae_path, sae_relation

log = logging.getLogger("benchmarks.seismic_engine")  # not seismic.py: run from benchmarks/, it would hide `seismic`
DEPTHS = (10, 1000)
SETTINGS = {"seismic (library defaults: query_cut 10, heap_factor 0.7)": {"query_cut": 10, "heap_factor": 0.7},
            "seismic (query_cut 128, heap_factor 0.9)": {"query_cut": 128, "heap_factor": 0.9}}


def recall_against(run: dict, reference: dict, k: int) -> float:
    shares = []
    for qid, hits in reference.items():
        wanted = {d for d, _ in hits[:k]}
        if wanted:
            shares.append(len(wanted & {d for d, _ in run.get(qid, [])[:k]}) / len(wanted))
    return float(np.mean(shares))


def decoded(rows) -> list[list[tuple[str, float]]]:
    """Sparse rows (torch) as [(c<latent>, weight), ...]: clsr's term names, which the Lucene index uses too."""
    out = []
    for row in rows:
        row = row.coalesce() if row.is_sparse else row.to_sparse().coalesce()
        out.append([(f"c{i}", float(v)) for i, v in zip(row.indices()[0].tolist(), row.values().tolist()) if v > 0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--work", type=Path, default=Path("runs/bench/seismic"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/seismic.json"))
    parser.add_argument("--queries", type=int, default=None, help="only the first N test queries (smoke runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.search_engines import semantic_search_seismic

    from clsr.search import ClsrSearcher
    from clsr.search.sentence_transformers import export_index

    source = str(resolve(args.dataset))
    documents = load_corpus(source)
    topics = load_topics(source, "test")
    qrels = load_qrels(source, "test")
    if args.queries:
        topics = dict(list(topics.items())[:args.queries])
    qids, texts = list(topics), list(topics.values())
    sae_path = default_sae_path()
    encoder = DenseEncoder(encoder_config("minilm"), backend="torch", dtype="fp32")
    encoded = encode_corpus(encoder, documents)
    torch.set_num_threads(1)  # the search and query measurements run on one thread; the corpus encoding did not
    index_dir = args.work / f"{Path(source).name}-concepts-torch-fp32"
    if not (index_dir / MANIFEST_NAME).exists():
        build_concept_index(encoded.ids, encoded.embeddings, index_dir, sae=TopKSae.load_from_disk(sae_path),
                            sae_path=sae_path, encoder=encoder.config.to_dict(), encoding=encoder.encoding,
                            source=source, overwrite=True, progress=False)
    exported = args.work / "sparse-encoder"
    start = time.perf_counter()
    export_index(index_dir, exported, overwrite=True)
    export_s = time.perf_counter() - start

    model = SparseEncoder(str(exported), local_files_only=True, device="cpu")
    with torch.inference_mode():
        doc_codes = model[-1]({"sentence_embedding": torch.from_numpy(np.asarray(encoded.embeddings))})[
            "sentence_embedding"]
    corpus_decoded = decoded(doc_codes)
    query_codes = model.encode_query(texts, convert_to_sparse_tensor=False)
    queries_decoded = decoded(query_codes)
    encode_ms = latencies_ms(lambda q: model.encode_query([q]), texts)

    start = time.perf_counter()
    _, _, seismic_index = semantic_search_seismic(queries_decoded[:1], corpus_decoded, top_k=10, output_index=True,
                                                  index_kwargs={"num_threads": 1})
    seismic_build_s = time.perf_counter() - start

    runs, latency = {}, {}
    doc_ids = encoded.ids
    for name, search_kwargs in SETTINGS.items():
        for depth in DEPTHS:
            def search_one(i, depth=depth, search_kwargs=search_kwargs):
                return semantic_search_seismic([queries_decoded[i]], corpus_index=seismic_index, top_k=depth,
                                               search_kwargs={**search_kwargs, "num_threads": 1})[0][0]
            latency[(name, depth)] = latencies_ms(search_one, range(len(texts)))
        results, _ = semantic_search_seismic(queries_decoded, corpus_index=seismic_index, top_k=max(DEPTHS),
                                             search_kwargs={**search_kwargs, "num_threads": 1})
        runs[name] = {qid: [(doc_ids[h["corpus_id"]], float(h["score"])) for h in hits]
                      for qid, hits in zip(qids, results)}

    searcher = ClsrSearcher(index_dir)
    lucene_name = "Lucene (clsr impact index, 8-bit, exact)"
    runs[lucene_name] = searcher.batch_search(topics, k=max(DEPTHS), progress=False)
    searcher.query_encoder.prime(texts)
    for depth in DEPTHS:
        latency[(lucene_name, depth)] = latencies_ms(lambda q, depth=depth: searcher.impact_searcher.search(q, depth),
                                                     texts)

    import scipy.sparse

    def matrix(rows):
        dense = torch.stack([r.to_dense() for r in rows]) if rows[0].is_sparse else torch.stack(list(rows))
        return scipy.sparse.csr_matrix(dense.numpy())

    scores = (matrix(query_codes) @ matrix(doc_codes).T).toarray()
    exact_name = "exact float dot product (brute force)"
    runs[exact_name] = {}
    for qid, row in zip(qids, scores):
        best = np.argsort(-row, kind="stable")[:max(DEPTHS)]
        runs[exact_name][qid] = [(doc_ids[i], float(row[i])) for i in best if row[i] > 0]

    methods = {}
    for name, run in runs.items():
        quality = evaluate({qid: hits for qid, hits in run.items() if hits}, qrels, ("ndcg@10", "recall@1000"))
        methods[name] = {
            "ndcg@10": round(quality["ndcg@10"], 4), "recall@1000 (qrels)": round(quality["recall@1000"], 4),
            **{f"recall@{k} vs Lucene": round(recall_against(run, runs[lucene_name], k), 4) for k in DEPTHS},
            **{f"recall@{k} vs exact float": round(recall_against(run, runs[exact_name], k), 4) for k in DEPTHS},
            **{f"p{int(q * 100)} ms top {k}": round(percentile(latency[(name, k)], q), 3)
               for k in DEPTHS for q in (0.5, 0.95) if (name, k) in latency}}
    result = {
        "dataset": Path(source).name, "queries": len(qids), "documents": len(doc_ids),
        "sae": sae_path.name, "sae_relation": sae_relation(sae_path, source), "doc_k": 128, "query_k": 128,
        "encoding": "MiniLM, torch fp32 (the sentence-transformers path)", "threads": 1,
        "export_s": round(export_s, 1), "seismic_build_s": round(seismic_build_s, 1),
        "encode_query_ms_p50": round(percentile(encode_ms, 0.5), 2),
        "encode_query_ms_p95": round(percentile(encode_ms, 0.95), 2),
        "methods": methods, "machine": machine_info(), "cpu_kind": cpu_kind(),
        "cpu_flags": sorted(cpu_flags()), "versions": {**versions(), **_extra_versions()},
    }
    write_report(result, args.out, markdown(result))


def _extra_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("sentence-transformers", "pyseismic-lsr"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def markdown(result: dict) -> str:
    columns = ["ndcg@10", "recall@10 vs Lucene", "recall@1000 vs Lucene", "recall@10 vs exact float",
               "recall@1000 vs exact float", "p50 ms top 10", "p95 ms top 10", "p50 ms top 1000", "p95 ms top 1000"]
    lines = [f"SciFact test ({result['queries']} queries, {result['documents']} passages); SAE "
             f"`{result['sae']}`, **{result['sae_relation'].upper()}** on {result['dataset']}; doc K and query K 128; "
             f"{result['encoding']}; one thread; search alone (queries encoded beforehand). "
             f"`encode_query`, one query: p50 {result['encode_query_ms_p50']} ms, "
             f"p95 {result['encode_query_ms_p95']} ms. "
             f"Seismic index build {result['seismic_build_s']} s; export {result['export_s']} s.", "",
             "| engine | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in result["methods"].items():
        lines.append(f"| {name} | " + " | ".join(str(values.get(c, "–")) for c in columns) + " |")
    machine = result["machine"]
    versions_ = result["versions"]
    lines += ["", f"Measured on {machine['cpu']} ({machine['cores']} cores, {cpu_kind_text(result)}); "
              f"sentence-transformers {versions_.get('sentence-transformers')}, pyseismic-lsr "
              f"{versions_.get('pyseismic-lsr')}, Pyserini {versions_.get('pyserini')}, "
              f"torch {versions_.get('torch')}.",
              ""]
    return "\n".join(lines)


def cpu_kind_text(result: dict) -> str:
    return f"CPU kind {result['cpu_kind']}"


if __name__ == "__main__":
    main()
