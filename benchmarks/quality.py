"""Quality and cost of every method on one BEIR-layout collection, measured in one run.

    python benchmarks/quality.py --dataset scifact --out benchmarks/results/scifact.json

Writes the JSON (``{"dataset", "split", "methods": {name: {...}}, "machine", "versions"}``) and a
markdown table beside it (same name, ``.md``). Latencies are per query, one thread, top 1000:
``search_ms_*`` excludes query encoding, ``e2e_ms_p50`` includes it. Indexes are built under
``benchmarks/work/<dataset>/`` (git-ignored) and reused; embeddings come from the clsr cache.
The dense row's ``encode_docs_per_s`` is measured in the run, on all cores, over the corpus's first
``ENCODING_SAMPLE`` passages, with the load average beside it (``encode_load_average``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
from pathlib import Path

from harness import (
    build_baselines,
    build_concept_index_for,
    concept_search_report,
    latencies_ms,
    machine_info,
    method_report,
    percentile,
    sae_fidelity_runs,
    sae_relation,
    sae_statistics,
    seen_collections,
    top_hits,
    versions,
    write_report,
)

from clsr.data import load_corpus, load_qrels, load_topics, resolve
from clsr.encode.dense import encoding_rate
from clsr.fusion import (
    DEFAULT_ALPHA,
    PSEUDO_QUERIES,
    HybridSearcher,
    best_alpha,
    interpolate,
    interpolation_curve,
    pseudo_queries,
    reciprocal_rank_fusion,
)
from clsr.index import DOC_CODES_DIR
from clsr.sae.model import TopKSae, default_sae_path
from clsr.search import Bm25Searcher, ClsrSearcher, DenseSearcher

HERE = Path(__file__).resolve().parent
DEPTH = 1000
ENCODING_SAMPLE = 200  # passages timed for the dense row's encode docs/s (the corpus's first)


SAE_KS = (32, 64, 128)
HYBRID_KS = (64, 128)
TUNING_SPLITS = ("dev", "train")  # alpha is tuned on the first that exists, never on the reported split


def tuning_split(source, split: str) -> str | None:
    folder = Path(str(source)) / "qrels"
    return next((s for s in TUNING_SPLITS if s != split and (folder / f"{s}.tsv").exists()), None)


def hybrid_rows(index_dir: Path, k: int, baselines, topics, qrels, tuning, relevance_threshold: int,
                bm25_runs: dict | None) -> dict:
    """hybrid_k{k} (and, for the largest K, its alternatives and the fusion with BM25), alpha tuned on `tuning`."""
    rows = {}
    variants = [("", "original")] + ([("_reconstructed_query", "reconstructed")] if k == max(HYBRID_KS) else [])
    codes_bytes = sum((index_dir / DOC_CODES_DIR / f).stat().st_size for f in ("latents.npy", "activations.npy"))
    for suffix, query_side in variants:
        searcher = HybridSearcher(index_dir, query_side=query_side, encoder=baselines.encoder.config)
        alpha, curve = DEFAULT_ALPHA, None
        if tuning is not None:
            tune_sparse, tune_dense = searcher.component_runs(tuning["topics"])
            curve = interpolation_curve(tune_sparse, tune_dense, tuning["qrels"],
                                        relevance_threshold=relevance_threshold)
            searcher.alpha = alpha = best_alpha(curve)
        run = searcher.batch_search(topics, k=DEPTH, progress=False)
        texts = list(topics.values())
        searcher.sparse.query_encoder.prime(texts)
        search_ms = latencies_ms(lambda q, searcher=searcher: searcher.search(q, DEPTH), texts)
        searcher.sparse.query_encoder.forget()
        end_to_end = latencies_ms(lambda q, searcher=searcher: searcher.search(q, DEPTH), texts)
        name = f"hybrid_k{k}{suffix}"
        rows[name] = method_report(run, qrels, search_ms, relevance_threshold=relevance_threshold,
                                   e2e_ms_p50=round(percentile(end_to_end, 0.5), 3),
                                   index_bytes=searcher.sparse.manifest.lucene_bytes + codes_bytes,
                                   alpha=alpha, alpha_tuned_on=tuning["split"] if tuning else None,
                                   alpha_curve=curve, query_side=query_side, mode=searcher.mode)
        if suffix == "" and k == max(HYBRID_KS) and bm25_runs is not None:
            # CL-SR + BM25: the hybrid's run interpolated with BM25's, alpha (on CL-SR) tuned the same way.
            bm25_alpha, bm25_curve = DEFAULT_ALPHA, None
            if tuning["pseudo"]:
                # Pseudo-queries are sentences of their passage, an exact lexical match: they would pick BM25
                # alone (transfer.md). Without a real tuning split the fusion with BM25 is RRF, which has no alpha.
                rows["clsr_bm25"] = method_report(
                    reciprocal_rank_fusion([run, bm25_runs["test"]], k=DEPTH), qrels,
                    relevance_threshold=relevance_threshold,
                    index_bytes=rows[name]["index_bytes"] + bm25_runs["index_bytes"], alpha=None, fusion="rrf",
                    fused=[name, "bm25"])
                continue
            if tuning is not None:
                tune_hybrid = interpolate(tune_sparse, tune_dense, alpha, k=DEPTH)  # = the tuned hybrid's run
                bm25_curve = interpolation_curve(tune_hybrid, bm25_runs["tuning"], tuning["qrels"],
                                                 relevance_threshold=relevance_threshold)
                bm25_alpha = best_alpha(bm25_curve)
            fused = interpolate(run, bm25_runs["test"], bm25_alpha)
            rows["clsr_bm25"] = method_report(fused, qrels, relevance_threshold=relevance_threshold,
                                              index_bytes=rows[name]["index_bytes"] + bm25_runs["index_bytes"],
                                              alpha=bm25_alpha, alpha_tuned_on=tuning["split"] if tuning else None,
                                              alpha_curve=bm25_curve, fused=[name, "bm25"])
    return rows


SPLADE_PP_ED = {"scifact": 0.7036, "nfcorpus": 0.3473}  # published nDCG@10 (BEIR test), ../shared/README.md


def words_rows(baselines, sae_path: Path, name: str, topics, qrels, relevance_threshold: int, bm25: dict,
               bm25_searcher) -> dict:
    """The default index (words and concepts, `clsr index`'s default mix) beside its parts, in one run: words and
    concepts (the default engine, and Lucene), concepts only (the same index at W = 0), words only (the word part
    alone), and the two-index RRF of the concept and BM25 runs; plus what each kind of term carries of the top 10's
    scores, and search p50 at top 1000 beside BM25's, timed alternately on the same queries."""
    from harness import paired_latencies_ms

    from clsr.index.words import query_words
    from clsr.interpret.explain import TermKinds, score_parts
    from clsr.search.engines import EngineConfig, default_engine

    k = TopKSae.load_from_disk(sae_path).config.k
    index_dir = HERE / "work" / name / f"words-concepts-k{k}"
    manifest = build_concept_index_for(baselines, index_dir, sae_path, doc_k=k, words=True)
    engine = default_engine()
    texts = list(topics.values())
    rows = {}
    words_bytes = manifest.words.bytes
    folder = manifest.lucene_bytes + manifest.doc_codes_bytes + words_bytes
    for row, options in (("words_concepts", {"engine": EngineConfig(engine) if engine != "lucene" else None}),
                         ("words_concepts_lucene", {}), ("concepts_only", {"words_weight": 0.0})):
        searcher = ClsrSearcher(index_dir, encoder=baselines.encoder.config, **options)
        run = searcher.batch_search(topics, k=DEPTH, progress=False)
        searcher.query_encoder.prime(texts)
        bm25_ms, search_ms = paired_latencies_ms(lambda q: bm25_searcher.search(q, DEPTH),
                                                 lambda q, s=searcher: s.hits(q, DEPTH), texts)
        searcher.query_encoder.forget()
        rows[row] = method_report(run, qrels, search_ms, relevance_threshold=relevance_threshold,
                                  engine=(options.get("engine").name if options.get("engine") else "lucene"),
                                  words_weight=searcher.concept_encoder.words_weight,
                                  normalization=searcher.concept_encoder.normalization,
                                  bm25_search_ms_p50_same_run=round(percentile(bm25_ms, 0.5), 3),
                                  x_bm25_search_p50=round(percentile(search_ms, 0.5) / percentile(bm25_ms, 0.5), 3),
                                  index_bytes=manifest.lucene_bytes, doc_codes_bytes=manifest.doc_codes_bytes,
                                  doc_words_bytes=words_bytes, folder_bytes=folder)
        if row == "words_concepts_lucene":
            kinds = TermKinds.for_searcher(searcher)
            shares = {kind: [] for kind in ("word", "specific", "broad")}
            for text in texts:
                for hit in searcher.search(text, 10):
                    parts = score_parts(hit.concepts, kinds)
                    for kind, value in parts.items():
                        shares[kind].append(value / hit.score)
            rows[row]["score_share_top10"] = {kind: round(sum(v) / max(len(v), 1), 4) for kind, v in shares.items()}
        if row == "concepts_only":
            vocabulary = set(searcher.concept_encoder.words.vocabulary)
            words_run = {}
            for qid, text in topics.items():
                vector = {t: c for t, c in query_words(text).items() if t[2:] in vocabulary}
                words_run[qid] = searcher.search_vector(vector, DEPTH) if vector else []
            rows["words_only"] = method_report(words_run, qrels, relevance_threshold=relevance_threshold,
                                               doc_words_bytes=words_bytes)
            rows["rrf_concepts_bm25"] = method_report(
                reciprocal_rank_fusion([run, bm25["test"]], k=DEPTH), qrels, relevance_threshold=relevance_threshold,
                fused=["concepts_only", "bm25"])
    # What the words add to the folder, against BM25's whole index.
    concept_only = HERE / "work" / name / f"concepts-k{k}"
    if (concept_only / "clsr-index.json").exists():
        from clsr.index import read_manifest

        rows["words_concepts"]["words_added_bytes"] = (manifest.lucene_bytes - read_manifest(concept_only).lucene_bytes
                                                       + words_bytes)
    published = SPLADE_PP_ED.get(name)
    if published is not None:
        rows["splade_pp_ed"] = {"ndcg@10": published, "published": "BEIR test, as Pyserini reports SPLADE++ ED"}
    return rows


def measure(dataset: str, split: str, relevance_threshold: int, sae_path: Path | None, adapt: bool = False) -> dict:
    import faiss

    source = resolve(dataset)
    name = re.sub(r"[^\w.-]+", "_", str(dataset).strip("/"))
    topics, qrels = load_topics(source, split), load_qrels(source, split)
    baselines = build_baselines(str(source), HERE / "work" / name)
    # Encoding speed measured in this run, on all cores: the cache's figure is whichever run wrote it.
    load_average = [round(x, 2) for x in os.getloadavg()]
    encode_docs_per_s = encoding_rate(baselines.encoder, [d.text for d in baselines.documents[:ENCODING_SAMPLE]])
    texts = list(topics.values())
    methods = {}
    adaptation = None
    if adapt and sae_path is not None:
        # What a user with this corpus and no judgments gets: the SAE adapted to its text first.
        from clsr.sae.adapt import adapt_to_corpus

        base_path, sae_path = sae_path, HERE / "work" / name / "adapted-sae"
        _, report, encode_seconds = adapt_to_corpus(base_path, str(source), baselines.encoder, sae_path,
                                                    progress=False)
        adaptation = {"base": _shown(base_path), **report.to_dict(), "encode_s": round(encode_seconds, 1)}

    split_for_tuning = tuning_split(source, split)
    if split_for_tuning is not None:
        tuning = {"split": split_for_tuning, "topics": load_topics(source, split_for_tuning),
                  "qrels": load_qrels(source, split_for_tuning), "pseudo": False}
    else:  # no train or dev split: alpha as `clsr index` tunes it, on pseudo-queries from the corpus (no judgments)
        pseudo_topics, pseudo_qrels = pseudo_queries(load_corpus(source), PSEUDO_QUERIES)
        split_for_tuning = f"{len(pseudo_topics)} pseudo-queries"
        tuning = {"split": split_for_tuning, "topics": pseudo_topics, "qrels": pseudo_qrels, "pseudo": True}

    # Single-thread latency, comparable with Lucene's one search thread. faiss's call sets OpenMP's
    # thread count, which torch shares, so the encoder is pinned to one thread explicitly as well.
    faiss.omp_set_num_threads(1)
    baselines.encoder.threads = 1
    bm25 = Bm25Searcher(baselines.bm25_dir)
    run = bm25.batch_search(topics, k=DEPTH)
    bm25_runs = {"test": run, "index_bytes": None,
                 "tuning": bm25.batch_search(tuning["topics"], k=DEPTH) if not tuning["pseudo"] else None}
    timings = latencies_ms(lambda q: bm25.search(q, DEPTH), texts)
    methods["bm25"] = method_report(run, qrels, timings, baselines.bm25_dir, relevance_threshold,
                                    e2e_ms_p50=round(percentile(timings, 0.5), 3))
    bm25_runs["index_bytes"] = methods["bm25"]["index_bytes"]

    dense = DenseSearcher(baselines.dense_dir, encoder=baselines.encoder)
    vectors = dense.encoder.encode_queries(texts)
    run = dict(zip(topics, dense.search_vectors(vectors, DEPTH)))
    timings = latencies_ms(lambda v: dense.search_vectors(v[None, :], DEPTH), list(vectors))
    end_to_end = latencies_ms(lambda q: dense.search(q, DEPTH), texts)
    methods["dense"] = method_report(run, qrels, timings, baselines.dense_dir, relevance_threshold,
                                     e2e_ms_p50=round(percentile(end_to_end, 0.5), 3),
                                     encode_docs_per_s=round(encode_docs_per_s, 1),
                                     encode_sample=ENCODING_SAMPLE, encode_load_average=load_average,
                                     encoder=baselines.encoder.config.model, dtype=baselines.encoder.dtype,
                                     backend=baselines.encoder.backend)

    sae_report = None
    if sae_path is not None:
        sae = TopKSae.load_from_disk(sae_path)
        sae.check_encoder(baselines.encoder.config.to_dict())
        documents = dense.index.reconstruct_n(0, dense.index.ntotal)
        sae_report = {"path": _shown(sae_path), "n_latents": sae.config.n_latents, "k": sae.config.k,
                      "relation": sae_relation(sae_path, str(dataset)), "trained_on": seen_collections(sae_path),
                      "adaptation": adaptation, **sae_statistics(sae, vectors, documents)}
        for k in (k for k in SAE_KS if k <= sae.config.k):
            index_dir = HERE / "work" / name / f"concepts-k{k}"
            manifest = build_concept_index_for(baselines, index_dir, sae_path, doc_k=k)
            searcher = ClsrSearcher(index_dir, encoder=baselines.encoder.config)
            methods[f"sparse_lucene_k{k}"] = concept_search_report(searcher, topics, qrels, DEPTH, relevance_threshold)
            # The same query and document codes in float, scored exactly: what quantisation costs.
            for method, run in sae_fidelity_runs(sae, vectors, documents, list(topics), dense.ids, k, DEPTH,
                                                 query_k=manifest.query.k).items():
                methods[method] = method_report(run, qrels, relevance_threshold=relevance_threshold)
            # The original query against the decoded document codes, exactly: the hybrid's dense side alone.
            decoded = searcher.doc_codes.decoded(slice(None), searcher.concept_encoder.sae)
            methods[f"original_vs_decoded_k{k}"] = method_report(
                top_hits(vectors @ decoded.T, list(topics), searcher.doc_codes.ids, DEPTH), qrels,
                relevance_threshold=relevance_threshold)
            if k in HYBRID_KS:
                methods.update(hybrid_rows(index_dir, k, baselines, topics, qrels, tuning, relevance_threshold,
                                           bm25_runs))
        methods.update(words_rows(baselines, sae_path, name, topics, qrels, relevance_threshold, bm25_runs, bm25))

    return {"dataset": str(dataset), "split": split, "queries": len(topics), "relevance_threshold": relevance_threshold,
            "alpha_tuned_on": split_for_tuning, "default_alpha": DEFAULT_ALPHA,
            "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "methods": methods, "sae": sae_report, "machine": machine_info(), "versions": versions()}


def _words_summary(result: dict) -> list[str]:
    """The default index against its parts and peers, in words (issue 31's goals), from the same JSON."""
    m = result["methods"]
    if "words_concepts" not in m:
        return []
    best = max(m["words_only"]["ndcg@10"], m["concepts_only"]["ndcg@10"])
    mix = m["words_concepts"]
    shares = m["words_concepts_lucene"].get("score_share_top10", {})
    lines = ["", f"Words and concepts at the default mix (W {mix['words_weight']}, {mix['normalization']} "
             f"normalisation, engine {mix['engine']}): nDCG@10 {mix['ndcg@10']:.4f}, "
             f"{mix['ndcg@10'] / best:.3f}x the better of words only ({m['words_only']['ndcg@10']:.4f}) and concepts "
             f"only ({m['concepts_only']['ndcg@10']:.4f}); the two-index RRF of concepts and BM25 "
             f"{m['rrf_concepts_bm25']['ndcg@10']:.4f}; BM25 {m['bm25']['ndcg@10']:.4f}"
             + (f"; SPLADE++ ED (published) {m['splade_pp_ed']['ndcg@10']:.4f}" if "splade_pp_ed" in m else "")
             + f". Search p50 at top 1000: {mix['search_ms_p50']:.2f} ms, {mix['x_bm25_search_p50']:.2f}x BM25's "
             f"{mix['bm25_search_ms_p50_same_run']:.2f} ms timed alternately on the same queries (Lucene: "
             f"{m['words_concepts_lucene']['x_bm25_search_p50']:.2f}x)."]
    if "words_added_bytes" in mix:
        lines[-1] += (f" The words add {mix['words_added_bytes'] / 2**20:.2f} MB to the folder (Lucene postings and "
                      f"`doc_words/`), against BM25's index of {m['bm25']['index_bytes'] / 2**20:.2f} MB.")
    if shares:
        lines[-1] += (" Share of the top 10's scores carried by words / specific concepts / broad concepts: "
                      f"{shares['word']:.1%} / {shares['specific']:.1%} / {shares['broad']:.1%}.")
    return lines


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path)


def markdown(result: dict) -> str:
    dense_ndcg = result["methods"].get("dense", {}).get("ndcg@10")
    lines = [f"# {result['dataset']} ({result['split']}, {result['queries']} queries)", "",
             "| method | nDCG@10 | ×dense | MRR@10 | R@100 | R@1000 | index MB | search p50 ms | search p95 ms "
             "| e2e p50 ms | encode docs/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    def cell(m: dict, key: str, fmt: str, scale: float = 1.0) -> str:
        return format(m[key] * scale, fmt) if key in m else "–"

    for name, m in result["methods"].items():
        ratio = f"{m['ndcg@10'] / dense_ndcg:.3f}" if dense_ndcg else "–"
        lines.append(
            f"| {name} | {m['ndcg@10']:.4f} | {ratio} | {cell(m, 'mrr@10', '.4f')} | {cell(m, 'recall@100', '.4f')} "
            f"| {cell(m, 'recall@1000', '.4f')} | {cell(m, 'index_bytes', '.2f', 2**-20)} "
            f"| {cell(m, 'search_ms_p50', '.2f')} "
            f"| {cell(m, 'search_ms_p95', '.2f')} | {cell(m, 'e2e_ms_p50', '.2f')} "
            f"| {m.get('encode_docs_per_s', '–')} |")
    lines += _words_summary(result)
    lucene_rows = {n: m for n, m in result["methods"].items() if n.startswith("sparse_lucene_")}
    bm25 = result["methods"].get("bm25")
    if lucene_rows and bm25:
        lines += ["", "Concept indexes (Lucene, same run as BM25; size and latency ratios to BM25):", "",
                  "| method | doc K | query | nDCG@10 − exact | index MB | ×BM25 size | postings | index docs/s "
                  "| search p50 ms | ×BM25 | p95 ms | top-10 p50 ms | e2e p50 ms | encoding overhead |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in lucene_rows.items():
            exact = result["methods"].get(name.replace("sparse_lucene_", "sparse_"), {}).get("ndcg@10")
            delta = f"{m['ndcg@10'] - exact:+.4f}" if exact is not None else "–"
            lines.append(
                f"| {name} | {m['doc_k']} | {m['query_mode']} {m['query_k']} | {delta} "
                f"| {m['index_bytes'] / 2**20:.2f} | {m['index_bytes'] / bm25['index_bytes']:.2f} | {m['postings']:,} "
                f"| {m['index_docs_per_s']:,.0f} | {m['search_ms_p50']:.2f} "
                f"| {m['search_ms_p50'] / bm25['search_ms_p50']:.2f} | {m['search_ms_p95']:.2f} "
                f"| {m['search_ms_p50_top10']:.2f} | {m['e2e_ms_p50']:.2f} | {m['encoding_overhead']:+.1%} "
                f"/ {m['encoding_overhead_batched']:+.1%} |")
        lines += ["", "Index MB is the Lucene index; `doc_codes/` (codes and reconstructions for the hybrid and "
                  "explanations) is reported as `doc_codes_bytes` in the JSON. Index docs/s covers SAE coding, "
                  "writing the JsonVectorCollection and Lucene indexing (dense encoding is the dense row's). "
                  "Encoding overhead: the queries' concept encoding (dense + SAE + quantisation) against dense "
                  "encoding alone, p50 one query at a time / all topics in batches of 32 (as `clsr search` encodes "
                  "them)."]
    if result.get("sae"):
        sae = result["sae"]
        relation = sae.get("relation", "transductive")
        lines += ["", f"**SAE rows are {relation.upper()}**: "
                  + {"transductive": "the SAE was trained on this collection's passages, so they overstate what a "
                                     "new corpus gets (see transfer.md for zero-shot and adapted figures).",
                     "zero-shot": "the SAE never saw this collection.",
                     "adapted": f"the SAE {sae['adaptation']['base'] if sae.get('adaptation') else ''} was adapted "
                                "to this collection's passages, sentences and spans (no judgments)"
                                + (f" in {sae['adaptation']['seconds']:.0f} s (+{sae['adaptation']['encode_s']:.0f} s "
                                   "encoding)." if sae.get("adaptation") else ".")}[relation]]
        lines += ["", f"SAE {sae['path']} ({sae['n_latents']} latents, trained k={sae['k']}): "
                  f"FVU docs {sae['fvu_docs']}, queries {sae['fvu_queries']}; MSE docs {sae['mse_docs']}, "
                  f"queries {sae['mse_queries']}; dead at the end of training: {sae['dead_fraction']}; "
                  f"unused on this collection's documents and queries: {sae['unused_fraction']:.2%}. "
                  "sparse_kK: the concept index's query and document codes in float, scored exactly (no "
                  "quantisation); reconstructed_kK: exact search of decoded queries against decoded documents."]
    hybrids = {n: m for n, m in result["methods"].items() if n.startswith("hybrid_") or n == "clsr_bm25"}
    if hybrids:
        tuned = result.get("alpha_tuned_on")
        lines += ["", ("Hybrid rows: sparse top 1000 rescored with the query embedding (original, or reconstructed "
                       "where named) against the stored reconstructions, min-max interpolated; "
                       + (f"alpha (the sparse run's weight) tuned on the {tuned}"
                          + ("" if "pseudo" in str(tuned) else " split") + ": "
                          if tuned else f"**no train/dev split here: alpha is the documented default "
                                        f"{result.get('default_alpha')}**: ")
                       + ", ".join(f"{n} {m['alpha'] if m.get('alpha') is not None else 'RRF'}"
                                   for n, m in hybrids.items())
                       + ". clsr_bm25 interpolates hybrid_k128's run with BM25's (RRF where alpha was tuned on "
                         "pseudo-queries, which favour BM25's exact matches). A hybrid's index MB is the "
                         "Lucene index plus the document codes (latents and activations) it decodes; "
                         "original_vs_decoded_kK is its dense side alone, exactly.")]
    if "msmarco" in str(result["dataset"]):
        lines += ["", "**Smoke test only**: a 5,000-passage subset holding every DL19-judged passage; the numbers "
                  "are not comparable with official MS MARCO or DL19 results."]
    machine, v = result["machine"], result["versions"]
    lines += ["", f"Measured {result['measured']} on {machine['cpu']} ({machine['cores']} cores, "
              f"{machine['memory_gib']} GiB), one search thread, top {DEPTH}. "
              f"clsr {v['clsr']}, Pyserini {v['pyserini']} (Anserini {v['anserini']}), torch {v['torch']}, "
              f"faiss {v['faiss-cpu']}.", ""]
    return "\n".join(lines)


def plot_tradeoff(result: dict, path: Path) -> None:
    """nDCG@10 against index size and against search latency, one point per method that has both."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = {n: m for n, m in result["methods"].items() if "index_bytes" in m}
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for axis, key, label in ((axes[0], "index_bytes", "index size (MB)"),
                             (axes[1], "search_ms_p50", "search p50 (ms)")):
        for name, m in methods.items():
            if key not in m:
                continue
            x = m[key] / 2**20 if key == "index_bytes" else m[key]
            colour = "tab:grey" if name in ("bm25", "dense") else "tab:blue" if name.startswith("sparse") else "tab:red"
            axis.scatter(x, m["ndcg@10"], color=colour)
            axis.annotate(name, (x, m["ndcg@10"]), textcoords="offset points", xytext=(4, 3), fontsize=8)
        axis.set_xlabel(label)
        axis.set_ylabel("nDCG@10")
        axis.grid(alpha=0.3)
    axes[0].set_xscale("log")
    axes[0].xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    figure.suptitle(f"{result['dataset']} ({result['split']}): quality against cost, one thread, top 1000")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a BEIR folder or a collection name under $CLSR_DATA")
    parser.add_argument("--split", default="test")
    parser.add_argument("--relevance-threshold", type=int, default=1, help="2 for TREC DL qrels")
    parser.add_argument("--out", required=True, help="JSON file to write; the .md table goes beside it")
    parser.add_argument("--sae", help="SAE folder for the sparse_k*/reconstructed_k* rows (default: the bundled one)")
    parser.add_argument("--no-sae", action="store_true", help="baselines only")
    parser.add_argument("--adapt", action="store_true",
                        help="adapt the SAE to the collection's corpus first (clsr adapt-sae; no judgments) and "
                             "record the adaptation time")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the markdown table and plot from the existing JSON, measuring nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sae_path = None if args.no_sae else Path(args.sae) if args.sae else default_sae_path()
    out = Path(args.out)
    if args.report_only:
        result = json.loads(out.read_text())
    else:
        result = measure(args.dataset, args.split, args.relevance_threshold, sae_path, adapt=args.adapt)
    write_report(result, out, markdown(result))
    plot_tradeoff(result, out.with_name(out.stem + "-tradeoff.png"))


if __name__ == "__main__":
    main()
