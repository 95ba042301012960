"""`clsr search` / ``python -m clsr.search``: topics in, a TREC or MS MARCO run out; the flags mirror
``python -m pyserini.search.lucene``.

It sits in its own module, above `clsr.search`'s searchers, because it also opens the hybrid
(`clsr.fusion`), which is built on them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from clsr.options import (
    SOURCE_HELP,
    Command,
    UsageError,
    add_concept_query_options,
    add_encoder_options,
    add_engine_options,
    add_milvus_options,
    add_steering_options,
    concept_encoder_options,
    encoder_from_args,
    encoder_overridden,
    engine_config_from_args,
    positive_int,
    steering_from_args,
)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from clsr.fusion.command import add_hybrid_options

    parser.add_argument("--index", help="a clsr index folder (the lucene backend)")
    parser.add_argument("--backend", choices=["lucene", "milvus"], default="lucene",
                        help="lucene: the index folder (default); milvus: a collection made by `clsr export milvus`, "
                             "at --uri, named --collection")
    parser.add_argument("--topics", required=True, help=SOURCE_HELP)
    parser.add_argument("--split", default="test", help="for a BEIR folder: the qrels split whose queries to run")
    parser.add_argument("--output", required=True, help="run file to write")
    parser.add_argument("--output-format", choices=["trec", "msmarco"], default="trec")
    parser.add_argument("--hits", type=positive_int, default=1000, help="hits per query (default 1000)")
    parser.add_argument("--threads", type=positive_int, default=1, help="search threads (default 1)")
    parser.add_argument("--batch-size", type=positive_int, default=1,
                        help="queries handed to Lucene at once, searched by --threads threads (default 1: one by one)")
    parser.add_argument("--remove-query", action="store_true", help="drop a hit whose docid is the query's id")
    parser.add_argument("--explain", action="store_true",
                        help="write JSONL instead of a run: each hit with its top three shared concepts and their "
                             "descriptions (concept indexes; descriptions from concepts.jsonl if present)")
    parser.add_argument("--run-tag", default="clsr", help="tag in the run file's last column")
    add_concept_query_options(parser)
    add_engine_options(parser)
    add_hybrid_options(parser)
    add_steering_options(parser)
    add_encoder_options(parser, default_help="the index's")
    add_milvus_options(parser)


def _run(args: argparse.Namespace) -> None:
    from clsr.data import load_topics
    from clsr.index import read_manifest
    from clsr.index.atomic import FILE, check_replaceable
    from clsr.search import open_searcher

    # The run replaces a file; never a folder, the topics or the index (checked before the search, not after).
    check_replaceable(args.output, FILE, {"the topics": args.topics, "the index": args.index})
    if args.backend == "milvus":
        return _run_milvus(args)
    if not args.index:
        raise UsageError("--index is required with the lucene backend")
    topics = load_topics(args.topics, args.split)
    manifest = read_manifest(args.index)
    kind = manifest.kind
    if args.engine not in ("auto", "lucene") and kind != "concepts":
        raise UsageError(f"--engine {args.engine} searches a concept index; {args.index} is a {kind} index")
    if kind != "concepts" and (args.hybrid or args.explain):
        raise UsageError(f"--{'hybrid' if args.hybrid else 'explain'} needs a concept index; {args.index} is a "
                         f"{kind} index")
    steering = steering_from_args(args) if kind == "concepts" else {}
    if kind == "concepts":
        engine = engine_config_from_args(args)
        _say(f"engine {engine.name if engine else 'lucene'}"
             + (" (auto: " + ("pyseismic-lsr is installed)" if engine else "pyseismic-lsr is not installed)")
                if args.engine == "auto" else ""))
    if kind == "concepts" and args.hybrid:
        from clsr.fusion import HybridSearcher

        searcher = HybridSearcher(args.index, mode=args.hybrid_mode, query_side=args.hybrid_query,
                                  method=args.fusion, alpha=args.alpha, normalization=args.normalization,
                                  depth=args.depth, steering=steering, engine=engine,
                                  **concept_encoder_options(args, manifest))
        _say(f"hybrid: {searcher.describe()}")
    elif kind == "concepts":
        searcher = open_searcher(args.index, steering=steering, engine=engine,
                                 **concept_encoder_options(args, manifest))
    else:
        from clsr.encode.dense import EncoderConfig

        options = {}
        if kind == "dense" and encoder_overridden(args):  # checked against the index's encoder
            options["encoder"] = encoder_from_args(args, EncoderConfig.from_dict(manifest.encoder))
        searcher = open_searcher(args.index, **options)
    start = time.perf_counter()
    if kind == "concepts":
        run = searcher.batch_search(topics, k=args.hits, threads=args.threads, batch_size=args.batch_size)
    else:
        run = searcher.batch_search(topics, k=args.hits, threads=args.threads)
    _say_search_time(len(run), time.perf_counter() - start, args.threads)
    _write(searcher, topics, run, args)


def _say(text: str) -> None:
    """A note on stderr (stdout may be the run)."""
    print(f"clsr: {text}", file=sys.stderr)


def _say_search_time(queries: int, seconds: float, threads: int) -> None:
    """"searched 300 queries in 6.2 s: 20.7 ms/query": wall clock per query, query encoding included, as the README's
    demo table's "search ms/q" is; start-up (Pyserini, the encoder, an engine's first build) excluded."""
    if queries:
        _say(f"searched {queries} queries in {seconds:.1f} s: {1000 * seconds / queries:.1f} ms/query "
             f"({threads} thread{'s' * (threads != 1)}, query encoding included)")


def _run_milvus(args: argparse.Namespace) -> None:
    """The same search on a Milvus collection: its record holds the index manifest the options are checked against."""
    from clsr.data import load_topics
    from clsr.index.manifest import IndexManifest
    from clsr.search.milvus import MilvusSearcher, collection_record, milvus_client

    if args.index:
        raise UsageError("--index is for the lucene backend; the milvus backend reads --uri and --collection")
    if args.boost_concept and not args.catalogue:
        raise UsageError("--boost-concept with Milvus needs --catalogue (the index folder's concepts.jsonl)")
    topics = load_topics(args.topics, args.split)
    _, record = collection_record(milvus_client(args.uri), args.collection, args.uri)
    manifest = IndexManifest.from_dict(record["index_manifest"], where=f"Milvus collection {args.collection!r}")
    options = concept_encoder_options(args, manifest)
    searcher = MilvusSearcher(args.uri, args.collection, steering=steering_from_args(args), **options)
    if args.hybrid:
        from clsr.fusion import HybridSearcher

        searcher = HybridSearcher(sparse=searcher, mode=args.hybrid_mode, query_side=args.hybrid_query,
                                  method=args.fusion, alpha=args.alpha, normalization=args.normalization,
                                  depth=args.depth)
    run = searcher.batch_search(topics, k=args.hits, batch_size=args.batch_size)
    _write(searcher, topics, run, args)


def _write(searcher, topics: dict, run: dict, args: argparse.Namespace) -> None:
    from clsr.evaluate import write_run

    if args.remove_query:  # as Pyserini: for collections whose queries are documents too (e.g. ArguAna)
        run = {qid: [hit for hit in hits if hit[0] != qid] for qid, hits in run.items()}
    if args.explain:
        _write_explained_run(getattr(searcher, "sparse", searcher), topics, run, args)
        print(f"wrote {sum(map(len, run.values()))} explained hits for {len(run)} queries to {args.output}")
        return
    write_run(run, args.output, tag=args.run_tag, output_format=args.output_format)
    # On stdout, unless the run itself goes there.
    print(f"wrote {sum(map(len, run.values()))} hits for {len(run)} queries to {args.output}",
          file=sys.stderr if _is_stdout(args.output) else sys.stdout)


def _is_stdout(path: str) -> bool:
    """Whether the run file is this process's stdout (``/dev/stdout``, or a path to the same file)."""
    return os.path.realpath(path) == os.path.realpath("/proc/self/fd/1")


def _write_explained_run(searcher, topics: dict, run: dict, args: argparse.Namespace) -> None:
    """JSONL, a line per hit: qid, docid, rank, score and the top three shared concepts with descriptions."""
    from clsr.interpret.describe import index_catalogue, load_catalogue

    catalogue = (load_catalogue(args.catalogue) if args.catalogue
                 else index_catalogue(args.index) if args.index else {})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f, searcher.query_encoder.encoded(list(topics.values())):
        for qid, hits in run.items():
            vector = searcher.query_encoder.encode(topics[qid])
            for rank, (docid, score) in enumerate(hits, 1):
                shared = searcher.shared_concepts(vector, docid)[:3]
                f.write(json.dumps({"qid": qid, "docid": docid, "rank": rank, "score": score, "concepts": [
                    {"concept": c.concept, "query_weight": c.query_weight, "doc_weight": c.doc_weight,
                     "contribution": c.contribution,
                     "description": catalogue[c.concept].description if c.concept in catalogue else ""}
                    for c in shared]}) + "\n")


COMMAND = Command("search", "Search an index for a set of topics and write a run file. Mirrors python -m "
                            "pyserini.search.lucene; the index's manifest picks the searcher.", _add_arguments, _run)


# -- `clsr encode-queries`: topics pre-encoded for stock Pyserini (--impact --encoder FILE) --

def _add_encode_queries_arguments(parser) -> None:
    parser.add_argument("--index", required=True, help="the concept index the queries are for")
    parser.add_argument("--topics", required=True, help=SOURCE_HELP)
    parser.add_argument("--split", default="test", help="for a BEIR folder: the qrels split whose queries to encode")
    parser.add_argument("--output", required=True, help="JSONL file to write")
    parser.add_argument("--topics-output",
                        help="also write the topics for pyserini --topics: a .json file (Pyserini's JSON topics, "
                             "which keep every id as written), or .tsv when every id is a plain integer")
    add_concept_query_options(parser)
    add_encoder_options(parser, default_help="the index's")


def _run_encode_queries(args) -> None:
    from clsr.data import load_topics
    from clsr.index import read_manifest
    from clsr.index.atomic import FILE, check_replaceable
    from clsr.search.pyserini import ClsrQueryEncoder, write_query_cache

    for option in ("--output", "--topics-output"):
        path = getattr(args, option[2:].replace("-", "_"))
        if path is not None:
            check_replaceable(path, FILE, {"the topics": args.topics, "the index": args.index}, option=option)
    topics = load_topics(args.topics, args.split)
    encoder = ClsrQueryEncoder(args.index, **concept_encoder_options(args, read_manifest(args.index)))
    write_query_cache(encoder, topics, args.output, topics_output=args.topics_output)
    print(f"wrote {len(topics)} encoded queries to {args.output}"
          + (f" and their topics to {args.topics_output}" if args.topics_output else ""))


ENCODE_QUERIES_COMMAND = Command(
    "encode-queries",
    "Writes the JSONL query cache Pyserini's CachedDataQueryEncoder reads ({\"id\", \"contents\", \"vector\"}), so "
    "that python -m pyserini.search.lucene --index IDX --topics TOPICS --impact --encoder FILE gives clsr search's "
    "run.", _add_encode_queries_arguments, _run_encode_queries)


# -- `clsr export`: a concept index into Milvus (clsr.search.milvus.export_index), or its SAE and encoder as a
# sentence-transformers SparseEncoder folder (clsr.search.sentence_transformers.export_index) --

TARGETS = ("milvus", "sentence-transformers")


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=TARGETS, help="where to export (milvus, sentence-transformers)")
    parser.add_argument("--index", help="a clsr concept index folder (milvus: required)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing collection (the old one stays searchable until the new one is "
                             "complete) or output folder")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="rows per insert (default 1000)")
    add_milvus_options(parser)
    group = parser.add_argument_group("sentence-transformers (a SparseEncoder folder)")
    group.add_argument("--sae", help="an SAE folder to export instead of an index's (on the encoder it was trained on)")
    group.add_argument("--output", help="the folder to write")
    group.add_argument("--doc-k", type=positive_int, help="with --sae: the module's k (default: the SAE's k)")
    group.add_argument("--query-k", type=positive_int, help="with --sae: the query K recorded (default: the SAE's k)")


def _run_export(args: argparse.Namespace) -> None:
    if args.target == "sentence-transformers":
        return _run_export_sentence_transformers(args)
    from clsr.search.milvus import export_index

    if not args.index:
        raise UsageError("clsr export milvus needs --index")
    if "://" not in args.uri:  # Milvus Lite's database file: --overwrite replaces a collection in it, never the file
        from clsr.index.atomic import FILE, check_replaceable

        check_replaceable(args.uri, FILE, {"the index being exported": args.index}, option="--uri")
    record = export_index(args.index, args.uri, args.collection, overwrite=args.overwrite,
                          batch_size=args.batch_size)
    print(f"exported {record['documents']} passages of {args.index} to Milvus collection {args.collection!r} at "
          f"{args.uri} in {record['export_seconds']:.1f} s")


def _run_export_sentence_transformers(args: argparse.Namespace) -> None:
    if not args.output:
        raise UsageError("clsr export sentence-transformers needs --output")
    if bool(args.index) == bool(args.sae):
        raise UsageError("clsr export sentence-transformers needs --index or --sae (one of them)")
    if args.index and (args.doc_k or args.query_k):
        raise UsageError("--doc-k and --query-k are for --sae; an index exports its own")
    if args.index:
        from clsr.index import read_manifest
        from clsr.search.sentence_transformers import export_index

        output = export_index(args.index, args.output, overwrite=args.overwrite)
        what = f"the SAE and encoder of {args.index}"
        if read_manifest(args.index).words is not None:
            print(f"note: {args.index} also holds words (BM25 impacts), which a SparseEncoder of concepts leaves out: "
                  "the export gives the concept part of its search (--words-weight 0); its model card says so",
                  file=sys.stderr)
    else:
        from clsr.encode.dense import EncoderConfig
        from clsr.sae.config import SaeConfig
        from clsr.sae.sentence_transformers import ExportNotes, export_sparse_encoder

        config = SaeConfig.read(args.sae)
        if config.encoder is None:
            raise UsageError(f"{args.sae}: its config names no encoder, so there is no dense model to export with it")
        notes = ExportNotes(sae_name=Path(args.sae).name, trained_on=config.training.seen_collections(),
                            reference_fvu=config.training.reference_fvu)
        output = export_sparse_encoder(args.output, sae_path=args.sae, encoder=EncoderConfig.from_dict(config.encoder),
                                       doc_k=args.doc_k, query_k=args.query_k, notes=notes, overwrite=args.overwrite)
        what = f"the SAE {args.sae}"
    print(f"exported {what} as a sentence-transformers SparseEncoder to {output} "
          f"(load it with SparseEncoder({str(output)!r}))")


EXPORT_COMMAND = Command(
    "export",
    "Export a concept index to a served engine or another library. milvus: each passage's docid, its concept impacts "
    "(exactly the Lucene index's) as a sparse vector and its decoded embedding as a dense vector, with the index's "
    "manifest; atomic (an interrupted export is never searchable). sentence-transformers: the index's (or --sae's) "
    "SAE on its dense encoder as a SparseEncoder folder (a CSR SparseAutoEncoder module with the SAE's encoder "
    "weights, k = the doc K) with a model card; it loads offline with SparseEncoder(FOLDER).",
    _add_export_arguments, _run_export)
