"""`clsr demo`: the concept index, BM25 and the dense model side by side on one collection.

Its build-or-reuse and measuring helpers are also the base of benchmarks/harness.py.
"""

from __future__ import annotations

import logging
import re
import statistics
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clsr.cpu import cpu_kind, reported_flags
from clsr.data import Document, Qrels, load_corpus, load_qrels, load_topics, resolve
from clsr.encode.dense import DenseEncoder, encode_corpus, encoder_config
from clsr.evaluate import DEFAULT_METRICS, Run, evaluate, write_run
from clsr.index import (
    MANIFEST_NAME,
    build_bm25_index,
    build_concept_index,
    build_dense_index,
    directory_bytes,
    read_manifest,
)
from clsr.interpret.describe import CATALOGUE_NAME, build_catalogue, load_catalogue, write_catalogue
from clsr.options import SOURCE_HELP, Command, main_for
from clsr.sae.model import TopKSae, default_sae_path, sae_relation
from clsr.search import Bm25Searcher, ClsrSearcher, DenseSearcher
from clsr.search.engines import EngineConfig, default_engine

log = logging.getLogger(__name__)


@dataclass
class Baselines:
    source: str
    documents: list[Document]
    bm25_dir: Path
    dense_dir: Path
    encoder: DenseEncoder
    encode_docs_per_s: float
    encoded_from_cache: bool = False  # then encode_docs_per_s was measured by the run that wrote the cache


def build_baselines(dataset: str, work_dir: Path, encoder_name: str = "minilm", threads: int = 1) -> Baselines:
    """BM25 and dense indexes of `dataset` under `work_dir`, reused when already built."""
    source = str(resolve(dataset))
    documents = load_corpus(source)  # read once: BM25, encoding and callers' snippets share it
    bm25_dir, dense_dir = work_dir / "bm25", work_dir / f"dense-{encoder_name}"
    if not (bm25_dir / MANIFEST_NAME).exists():
        log.info("building the BM25 index of %s", source)
        build_bm25_index(documents, bm25_dir, source=source, threads=threads, overwrite=True)
    encoder = DenseEncoder(encoder_config(encoder_name))
    # Encoding goes through the embedding cache, so a rebuilt index costs no re-encoding.
    encoded = encode_corpus(encoder, documents)
    if not (dense_dir / MANIFEST_NAME).exists():
        build_dense_index(encoded.ids, encoded.embeddings, dense_dir, encoder=encoder.config.to_dict(),
                          encoding=encoder.encoding,
                          source=source, overwrite=True)
    return Baselines(source, documents, bm25_dir, dense_dir, encoder, encoded.docs_per_s, encoded.cached)


def build_concept_index_for(baselines: Baselines, index_dir: Path, sae_path: Path, doc_k: int,
                            query_k: int | None = None, query_mode: str = "topk", bits: int = 8,
                            threads: int = 1, reuse: bool = False, words: bool = False) -> dict:
    """A concept index of the baselines' corpus (embeddings from the cache); returns its manifest. With ``words``,
    each passage's words too (BM25 impacts) and `clsr index`'s default mix, as `clsr index` builds by default.

    Built afresh (benchmarks time the build) unless `reuse` and one is already there.
    """
    from clsr.sae.model import TopKSae

    if reuse and (index_dir / MANIFEST_NAME).exists():
        return read_manifest(index_dir)
    encoded = encode_corpus(baselines.encoder, baselines.documents)
    options = {}
    if words:
        from clsr.index.lucene import BM25_B, BM25_K1
        from clsr.index.mix import DEFAULT_NORMALIZATION, DEFAULT_WORDS_WEIGHT
        from clsr.index.words import corpus_words

        text = {d.id: d.text for d in baselines.documents}
        options = {"words": corpus_words([text[i] for i in encoded.ids], BM25_K1, BM25_B,
                                         baselines.encoder.config.max_length, progress=False),
                   "words_weight": DEFAULT_WORDS_WEIGHT, "normalization": DEFAULT_NORMALIZATION}
    return build_concept_index(encoded.ids, encoded.embeddings, index_dir, sae=TopKSae.load_from_disk(sae_path),
                               sae_path=sae_path, encoder=baselines.encoder.config.to_dict(),
                               encoding=baselines.encoder.encoding, doc_k=doc_k,
                               query_k=query_k, query_mode=query_mode, bits=bits, source=baselines.source,
                               threads=threads, overwrite=True, progress=False, **options)


def latencies_ms(search_one: Callable[[object], object], inputs: Sequence[object]) -> list[float]:
    """Wall time of each single-query call, in milliseconds, after one untimed pass over all inputs.

    A full warm-up pass matters for Lucene: measured here, the JIT leaves a tail of ~7x slower
    searches spread over the whole first pass, not just its first queries.
    """
    for item in inputs:
        search_one(item)
    times = []
    for item in inputs:
        start = time.perf_counter()
        search_one(item)
        times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def method_report(run: Run, qrels: Qrels, search_ms: Sequence[float] | None = None, index_dir: Path | None = None,
                  relevance_threshold: int = 1, **extra) -> dict:
    """The benchmark's per-method object: quality metrics, and index size and latency where measured."""
    report = {name: round(value, 4) for name, value in
              evaluate(run, qrels, DEFAULT_METRICS, relevance_threshold).items()}
    if index_dir is not None:
        report["index_bytes"] = directory_bytes(index_dir) - (index_dir / MANIFEST_NAME).stat().st_size
    if search_ms:
        report["search_ms_mean"] = round(statistics.fmean(search_ms), 3)
        report["search_ms_p50"] = round(percentile(search_ms, 0.5), 3)
        report["search_ms_p95"] = round(percentile(search_ms, 0.95), 3)
    report.update(extra)
    return report


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run_demo(dataset: str, work_dir: Path, split: str = "test", threads: int = 1, adapt: bool = False) -> None:
    source = resolve(dataset)
    work_dir = work_dir / re.sub(r"[^\w.-]+", "_", str(dataset).strip("/"))
    print(f"clsr demo on {source} ({split} queries); artefacts in {work_dir}\n")
    topics = load_topics(source, split)
    qrels = load_qrels(source, split)
    baselines = build_baselines(str(source), work_dir, threads=threads)

    bm25 = Bm25Searcher(baselines.bm25_dir)
    dense = DenseSearcher(baselines.dense_dir, encoder=baselines.encoder)
    query_texts = list(topics.values())
    query_vectors = dense.encoder.encode_queries(query_texts, progress=True, desc="encoding queries")

    sae_path = default_sae_path()
    if adapt:
        from clsr.sae.adapt import adapt_to_corpus

        sae_path = work_dir / "adapted-sae"
        if not (sae_path / "sae.safetensors").exists():
            print("adapting the SAE to the corpus (clsr adapt-sae; no judgments)")
            adapt_to_corpus(default_sae_path(), str(source), baselines.encoder, sae_path)
    doc_k = TopKSae.load_from_disk(sae_path).config.k  # clsr index's default doc K: the SAE's own
    concept_dir = work_dir / f"words-concepts-k{doc_k}{'-adapted' * adapt}"
    build_concept_index_for(baselines, concept_dir, sae_path, doc_k=doc_k, threads=threads, reuse=True, words=True)
    if not (concept_dir / CATALOGUE_NAME).exists():
        write_catalogue(build_catalogue(concept_dir), concept_dir / CATALOGUE_NAME)
    catalogue = load_catalogue(concept_dir / CATALOGUE_NAME)
    engine = default_engine()  # what `clsr search` uses unless told: its speed is what a user gets
    options = {"encoder": baselines.encoder.config, "dtype": baselines.encoder.dtype,
               "engine": EngineConfig(engine) if engine != "lucene" else None}
    mixed = ClsrSearcher(concept_dir, **options)
    concepts = ClsrSearcher(concept_dir, words_weight=0.0, **options)  # the same index, its concept part alone
    clsr_name, concepts_name = "CL-SR (words + concepts)", f"Concepts only (K={doc_k})"

    runs = {
        clsr_name: mixed.batch_search(topics, k=1000, threads=threads),
        concepts_name: concepts.batch_search(topics, k=1000, threads=threads),
        "BM25": bm25.batch_search(topics, k=1000, threads=threads),
        "Dense (MiniLM)": dict(zip(topics, dense.search_vectors(query_vectors, 1000))),
    }
    for searcher in (mixed, concepts):
        searcher.query_encoder.prime(query_texts)  # search time alone, as for the others
    timings = {
        clsr_name: latencies_ms(lambda q: mixed.hits(q, 1000), query_texts),
        concepts_name: latencies_ms(lambda q: concepts.hits(q, 1000), query_texts),
        "BM25": latencies_ms(lambda q: bm25.search(q, 1000), query_texts),
        "Dense (MiniLM)": latencies_ms(lambda v: dense.search_vectors(v[None, :], 1000), list(query_vectors)),
    }
    for searcher in (mixed, concepts):
        searcher.query_encoder.forget()
    index_dirs = {clsr_name: concept_dir, concepts_name: concept_dir, "BM25": baselines.bm25_dir,
                  "Dense (MiniLM)": baselines.dense_dir}

    print(f"\n{'method':<26} {'nDCG@10':>8} {'R@100':>7} {'index folder':>13} {'search ms/q':>12}")
    for name, run in runs.items():
        write_run(run, work_dir / "runs" / f"{name.split()[0].lower()}.trec", tag=name.split()[0].lower())
        report = method_report(run, qrels, timings[name], index_dirs[name])
        size = _human_bytes(report["index_bytes"] - _derived_bytes(index_dirs[name]))
        print(f"{name:<26} {report['ndcg@10']:>8.4f} {report['recall@100']:>7.4f} {size:>13} "
              f"{report['search_ms_mean']:>12.2f}")
    published = SPLADE_PP_ED.get(Path(str(source)).name)
    if published is not None:
        print(f"{'SPLADE++ ED (published)':<26} {published:>8.4f} {'–':>7} {'–':>13} {'–':>12}")
    encoder = baselines.encoder
    manifest = mixed.manifest
    print(f"search ms/q: one thread, top 1000, query encoding excluded; CL-SR on the {engine} engine "
          "(clsr search's default here). Index folder: the index's own files (the catalogue and the engine "
          "below not counted).\n"
          f"Encoding: {encoder.backend} {encoder.dtype} on {encoder.threads} thread{'s' * (encoder.threads != 1)}, "
          f"CPU {cpu_kind()} ({', '.join(reported_flags()) or 'no listed flags'}): the dense model encoded "
          f"{baselines.encode_docs_per_s:.1f} passages/s"
          f"{' when the corpus was first encoded and cached' if baselines.encoded_from_cache else ' here'} "
          "(docs/encoding-speed tables: what each kind of CPU gives).\n"
          f"CL-SR: each passage's top {doc_k} SAE concepts and its words (quantised BM25 weights) in one Lucene "
          f"impact index, one query scoring both (words weight {manifest.query.words_weight}); its folder holds the "
          f"Lucene files ({_human_bytes(manifest.lucene_bytes)}), doc_codes/ "
          f"({_human_bytes(manifest.doc_codes_bytes)}: each passage's top-K codes, from which the hybrid "
          f"and explanations derive what they need), doc_words/ ({_human_bytes(manifest.words.bytes)}) and the "
          f"concept catalogue ({_human_bytes((concept_dir / CATALOGUE_NAME).stat().st_size)}: descriptions and "
          "example snippets)"
          + (f", and the {engine} engine built on its first search "
             f"({_human_bytes(directory_bytes(concept_dir / 'engines'))}, engines/)" if engine != "lucene" else "")
          + ".\n"
          f"The SAE is {sae_relation(sae_path, str(dataset)).upper()} here: "
          + ("adapted to this corpus's text without judgments." if adapt else
             "the bundled one, trained on general English only, never saw this collection "
             "(`clsr demo --adapt` adapts it first)."))

    from clsr.interpret.explain import TermKinds, reading_order

    kinds = TermKinds.for_searcher(mixed)
    qid, query = next(iter(topics.items()))
    documents = {d.id: d.text for d in baselines.documents}
    print(f"\nQuery {qid}: {query}")
    for name, run in runs.items():
        print(f"  {name} top 3:")
        for rank, (docid, score) in enumerate(run[qid][:3], 1):
            mark = "*" if qrels.get(qid, {}).get(docid, 0) > 0 else " "
            snippet = textwrap.shorten(documents.get(docid, ""), 90, placeholder="...")
            print(f"   {mark}{rank}. {docid:<10} {score:8.3f}  {snippet}")
            if name == clsr_name:
                shared = reading_order(mixed.shared_concepts(mixed.query_encoder.encode(query), docid), kinds)
                print("        " + _evidence_line(shared, kinds, catalogue, score))
    print("  (* = judged relevant)")
    print("\nExplore these concepts in a browser (needs the serve extra: pip install 'clsr[serve]'):\n"
          f"  clsr serve --index {concept_dir} --bm25 {baselines.bm25_dir} --dense {baselines.dense_dir} --port 8080")


SPLADE_PP_ED = {"scifact": 0.7036, "nfcorpus": 0.3473}  # published nDCG@10 (BEIR test), ../shared/README.md


def _derived_bytes(index_dir: Path) -> int:
    """What a folder holds beside the index proper: the catalogue and engines/ (built on first use)."""
    catalogue = index_dir / CATALOGUE_NAME
    engines = index_dir / "engines"
    return (catalogue.stat().st_size if catalogue.exists() else 0) + (directory_bytes(engines) if engines.exists()
                                                                      else 0)


def _evidence_line(shared, kinds, catalogue, score: float) -> str:
    """"words: bone 21%, density 9%; concepts: c3678 (dna, cell) 12%; 14 broad concepts 31%": a hit's evidence in
    reading order, each share of its score."""
    def share(value: int) -> str:
        return f"{value / score:.0%}"

    words = [c for c in shared if kinds.kind(c.concept) == "word"]
    specific = [c for c in shared if kinds.kind(c.concept) == "specific"]
    broad = [c for c in shared if kinds.kind(c.concept) == "broad"]
    parts = []
    if words:
        parts.append("words: " + ", ".join(f"{c.concept[2:]} {share(c.contribution)}" for c in words[:4]))
    if specific:
        parts.append("concepts: " + "; ".join(
            f"{c.concept} ({catalogue[c.concept].description if c.concept in catalogue else ''}) "
            f"{share(c.contribution)}" for c in specific[:2]))
    if broad:
        parts.append(f"{len(broad)} broad concepts {share(sum(c.contribution for c in broad))}")
    return "; ".join(parts)


# -- the command line: `clsr demo` / `python -m clsr.demo` ---------------------------------------------------

def _add_demo_arguments(parser) -> None:
    parser.add_argument("--dataset", default="scifact", help=SOURCE_HELP + " (default scifact)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--work-dir", default="runs/demo", help="where indexes and runs go (default runs/demo)")
    parser.add_argument("--adapt", action="store_true",
                        help="adapt the bundled SAE to the corpus first (clsr adapt-sae)")
    parser.add_argument("--threads", type=int, default=1)


def _run_demo(args) -> None:
    run_demo(args.dataset, Path(args.work_dir), split=args.split, threads=args.threads, adapt=args.adapt)


COMMAND = Command("demo", "CL-SR, BM25 and dense side by side on a collection: builds (or reuses) the concept, "
                          "BM25 and dense indexes and the concept catalogue, runs the test queries, prints a table "
                          "and explained hits.", _add_demo_arguments, _run_demo)


if __name__ == "__main__":
    main_for(COMMAND, prog="python -m clsr.demo")
