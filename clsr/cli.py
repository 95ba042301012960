"""The `clsr` command line. Each subcommand is also `python -m clsr.<module>`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Sequence

SOURCE_HELP = ("a BEIR folder, a collection name under $CLSR_DATA (e.g. scifact), a .jsonl/.tsv file, "
               "or an ir_datasets id (e.g. beir/scifact/test; needs the network)")


def _add_encoder_options(parser: argparse.ArgumentParser, default_help: str = "minilm, bundled, works offline") -> None:
    group = parser.add_argument_group("dense encoder")
    group.add_argument("--encoder",
                       help=f"preset (minilm, bge), a local Hugging Face model folder, or a hub id (default: {default_help})")
    group.add_argument("--pooling", choices=["mean", "cls"], help="override the preset's pooling")
    group.add_argument("--query-prefix", help="text put before every query (bge's instruction for the bge preset)")
    group.add_argument("--max-length", type=int, help="tokens per text (preset default: 256 minilm, 512 bge)")
    group.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                       help="keep raw pooled vectors instead of L2-normalising them")
    group.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                       help="torch backend: auto = bf16 where the CPU has bf16 instructions (about 1.8x faster), "
                            "else fp32")
    group.add_argument("--backend", choices=["auto", "torch", "onnx", "onnx-int8"],
                       help="encoder runtime: torch, onnx (ONNX Runtime, fp32) or onnx-int8 (int8 matrix products, "
                            "faster, cosine ~0.995 to fp32); default: the index's when searching, else auto "
                            "(see README, Encoding speed)")
    group.add_argument("--encode-batch-size", type=int, default=32, help="texts per encoder batch (default 32)")
    group.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")


def _encoder_config(args: argparse.Namespace, base=None):
    """The encoder the flags ask for: `base` (e.g. the SAE's or the index's) unless --encoder is given,
    with --pooling/--query-prefix/--max-length/--no-normalize applied on top."""
    import dataclasses

    from .dense import encoder_config

    config = base if (args.encoder is None and base is not None) else encoder_config(args.encoder or "minilm")
    overrides = {"pooling": args.pooling, "query_prefix": args.query_prefix, "max_length": args.max_length,
                 "normalize": args.normalize}
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def _encoder_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name) is not None
               for name in ("encoder", "pooling", "query_prefix", "max_length", "normalize"))


def _encoder(args: argparse.Namespace, base=None):
    from .dense import DenseEncoder

    return DenseEncoder(_encoder_config(args, base), device=args.device, dtype=args.dtype,
                        batch_size=args.encode_batch_size, backend=args.backend or "auto")


def _add_concept_query_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("concept index queries")
    group.add_argument("--sae", help="SAE folder (default: the one the index was built with)")
    group.add_argument("--query-k", type=int, help="concepts per query (default: the index's, see its manifest)")
    group.add_argument("--query-mode", choices=["topk", "projected"],
                       help="topk: the query's own top-K code; projected: max(0, q . atom) on every concept, the K "
                            "largest kept (default: the index's)")
    group.add_argument("--force", action="store_true",
                       help="search even if the encoder or SAE differs from the one in the index's manifest")


def _add_steering_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("steering (concept indexes)")
    group.add_argument("--boost", action="append", default=[], metavar="cID=FACTOR",
                       help="multiply a concept's query weight, e.g. c123=2.0 (a concept the query lacks is added "
                            "at its mean weight times FACTOR); repeatable")
    group.add_argument("--suppress", action="append", default=[], metavar="cID",
                       help="remove a concept from every query; repeatable")
    group.add_argument("--boost-concept", action="append", default=[], metavar="TEXT[=FACTOR]",
                       help='boost the concepts whose descriptions best match TEXT, e.g. "employment, salary=3" '
                            "(needs concepts.jsonl from clsr describe); prints which it picked")
    group.add_argument("--catalogue", help="concepts.jsonl (default: the index folder's)")


def _steering(args: argparse.Namespace) -> dict[int, float]:
    from .concepts import concept_latent, parse_steering

    try:
        steering = parse_steering(args.boost, args.suppress)
    except ValueError as e:
        sys.exit(f"clsr {args.command}: error: {e}")
    if args.boost_concept:
        from .describe import CATALOGUE_NAME, load_catalogue, pick_concepts

        path = Path(args.catalogue) if args.catalogue else Path(args.index) / CATALOGUE_NAME
        if not path.exists():
            sys.exit(f"clsr {args.command}: error: --boost-concept needs {path}; run `clsr describe --index "
                     f"{args.index}` first")
        catalogue = load_catalogue(path)
        for item in args.boost_concept:
            text, _, factor = item.rpartition("=") if "=" in item else (item, "", "")
            picked = pick_concepts(catalogue, text)
            if not picked:
                sys.exit(f"clsr {args.command}: error: no concept description matches {text!r}")
            for term, _ in picked:
                steering[concept_latent(term)] = float(factor) if factor else 2.0
            print(f"--boost-concept {text!r}: boosting " + ", ".join(
                f"{term} ({catalogue[term].description})" for term, _ in picked), file=sys.stderr)
    return steering


def _add_hybrid_options(parser: argparse.ArgumentParser, tuning: bool = False) -> None:
    from .fusion import DEFAULT_ALPHA

    group = parser.add_argument_group("hybrid (concept index + dense scores of reconstructed documents)")
    if not tuning:
        group.add_argument("--hybrid", action="store_true", help="fuse the concept search with dense scores")
        group.add_argument("--fusion", choices=["interpolation", "rrf"], default="interpolation",
                           help="default interpolation")
        group.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                           help=f"weight of the sparse run in the interpolation (default {DEFAULT_ALPHA}; "
                                "pick one with clsr tune-alpha)")
    group.add_argument("--normalization", choices=["minmax", "zscore"], default="minmax",
                       help="per-query score normalisation before interpolation (default minmax)")
    group.add_argument("--hybrid-mode", choices=["rerank", "full"], default="rerank",
                       help="rerank: rescore the sparse top --depth; full: also search all reconstructions")
    group.add_argument("--hybrid-query", choices=["original", "reconstructed"], default="original",
                       help="the query embedding for the dense score: as encoded, or through the SAE")
    group.add_argument("--depth", type=int, default=1000, help="hits per component run (default 1000)")


def _concept_options(args: argparse.Namespace, manifest: dict) -> dict:
    """Keyword options for ClsrSearcher / ClsrQueryEncoder from the command line."""
    from .dense import EncoderConfig

    encoder = _encoder_config(args, EncoderConfig.from_dict(manifest["encoder"])) if _encoder_given(args) else None
    return {"encoder": encoder, "sae_path": args.sae, "query_k": args.query_k, "query_mode": args.query_mode,
            "force": args.force, "device": args.device, "dtype": args.dtype, "batch_size": args.encode_batch_size,
            "backend": args.backend if args.backend != "auto" else None}


def cmd_encode(args: argparse.Namespace) -> None:
    import numpy as np

    from .data import load_corpus, load_topics
    from .dense import encode_corpus

    encoder = _encoder(args)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if args.topics:
        topics = load_topics(args.topics, args.split)
        ids, vectors = list(topics), encoder.encode_queries(list(topics.values()), progress=True)
    else:
        encoded = encode_corpus(encoder, load_corpus(args.corpus))
        ids, vectors = encoded.ids, encoded.embeddings
    np.save(output / "embeddings.npy", np.asarray(vectors, dtype=np.float32))
    (output / "ids.txt").write_text("\n".join(ids), encoding="utf-8")
    (output / "encoder.json").write_text(json.dumps({**encoder.config.to_dict(), **encoder.encoding}, indent=2))
    print(f"wrote {len(ids)} x {vectors.shape[1]} embeddings to {output}")


def cmd_index(args: argparse.Namespace) -> None:
    from .data import iter_corpus, load_corpus, resolve
    from .index import build_bm25_index, build_concept_index, build_dense_index

    source = str(resolve(args.corpus))
    if args.kind == "bm25":
        manifest = build_bm25_index(iter_corpus(source), args.index, source=source, threads=args.threads,
                                    overwrite=args.overwrite)
    elif args.kind == "dense":
        from .dense import encode_corpus

        encoder = _encoder(args)
        encoded = encode_corpus(encoder, load_corpus(source))
        manifest = build_dense_index(encoded.ids, encoded.embeddings, args.index, encoder=encoder.config.to_dict(),
                                     encoding=encoder.encoding, source=source, overwrite=args.overwrite)
    else:
        from .dense import EncoderConfig, encode_corpus
        from .sae import TopKSae

        sae_path = _sae_path(args)
        sae = TopKSae.load_from_disk(sae_path)
        trained_on = EncoderConfig.from_dict(sae.config.encoder) if sae.config.encoder else None
        encoder = _encoder(args, trained_on)
        sae.check_encoder(encoder.config.to_dict())  # before encoding a whole corpus for nothing
        encoded = encode_corpus(encoder, load_corpus(source))
        with contextlib.ExitStack() as stack:
            if args.adapt:
                from .sae_adaptation import adapt_to_corpus

                Path(args.index).resolve().parent.mkdir(parents=True, exist_ok=True)
                adapted = stack.enter_context(tempfile.TemporaryDirectory(prefix=".adapted-sae-",
                                                                          dir=Path(args.index).resolve().parent))
                sae, report, encode_seconds = adapt_to_corpus(sae_path, source, encoder, adapted, _adapt_config(args))
                _print_adaptation(report, encode_seconds)
                sae_path = Path(adapted)
            manifest = build_concept_index(encoded.ids, encoded.embeddings, args.index, sae=sae, sae_path=sae_path,
                                           encoder=encoder.config.to_dict(), encoding=encoder.encoding,
                                           doc_k=args.doc_k, query_k=args.query_k,
                                           query_mode=args.query_mode, bits=args.bits, source=source,
                                           threads=args.threads, overwrite=args.overwrite, embed_sae=args.adapt)
    print(f"built {args.kind} index of {manifest['documents']} documents at {args.index}")


def cmd_search(args: argparse.Namespace) -> None:
    from .data import load_topics
    from .evaluate import write_run
    from .index import read_manifest
    from .search import open_searcher

    topics = load_topics(args.topics, args.split)
    manifest = read_manifest(args.index)
    steering = _steering(args) if manifest["kind"] == "concepts" else {}
    if manifest["kind"] == "concepts" and args.hybrid:
        from .fusion import HybridSearcher

        searcher = HybridSearcher(args.index, mode=args.hybrid_mode, query_side=args.hybrid_query,
                                  method=args.fusion, alpha=args.alpha, normalization=args.normalization,
                                  depth=args.depth, steering=steering, **_concept_options(args, manifest))
        run = searcher.batch_search(topics, k=args.hits, threads=args.threads, batch_size=args.batch_size)
    elif manifest["kind"] == "concepts":
        searcher = open_searcher(args.index, steering=steering, **_concept_options(args, manifest))
        run = searcher.batch_search(topics, k=args.hits, threads=args.threads, batch_size=args.batch_size)
    elif args.hybrid:
        sys.exit(f"clsr search: error: --hybrid needs a concept index; {args.index} is a {manifest['kind']} index")
    else:
        from .dense import EncoderConfig

        options = {}
        if manifest["kind"] == "dense" and _encoder_given(args):  # checked against the index's encoder
            options["encoder"] = _encoder(args, EncoderConfig.from_dict(manifest["encoder"]))
        searcher = open_searcher(args.index, **options)
        run = searcher.batch_search(topics, k=args.hits, threads=args.threads)
    if args.remove_query:  # as Pyserini: for collections whose queries are documents too (e.g. ArguAna)
        run = {qid: [hit for hit in hits if hit[0] != qid] for qid, hits in run.items()}
    if args.explain:
        if manifest["kind"] != "concepts":
            sys.exit(f"clsr search: error: --explain needs a concept index; {args.index} is a {manifest['kind']} index")
        _write_explained_run(getattr(searcher, "sparse", searcher), topics, run, args)
        print(f"wrote {sum(map(len, run.values()))} explained hits for {len(run)} queries to {args.output}")
        return
    write_run(run, args.output, tag=args.run_tag, output_format=args.output_format)
    print(f"wrote {sum(map(len, run.values()))} hits for {len(run)} queries to {args.output}")


def _write_explained_run(searcher, topics: dict, run: dict, args: argparse.Namespace) -> None:
    """JSONL, a line per hit: qid, docid, rank, score and the top three shared concepts with descriptions."""
    from .describe import CATALOGUE_NAME, load_catalogue

    path = Path(args.catalogue) if args.catalogue else Path(args.index) / CATALOGUE_NAME
    catalogue = load_catalogue(path) if path.exists() else {}
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


def cmd_fuse(args: argparse.Namespace) -> None:
    from .evaluate import read_run, write_run
    from .fusion import fuse

    runs = [read_run(path) for path in args.runs]
    fused = fuse(runs, args.method, args.alpha, args.normalization, args.rrf_k, k=args.hits)
    write_run(fused, args.output, tag=args.run_tag)
    print(f"fused {len(runs)} runs ({args.method}) into {args.output}: {len(fused)} queries")


def cmd_tune_alpha(args: argparse.Namespace) -> None:
    from .data import load_qrels, load_topics
    from .fusion import HybridSearcher, best_alpha, tune_alpha
    from .index import read_manifest
    from .sae_data import EVALUATION_SPLITS

    manifest = read_manifest(args.index)
    if args.pseudo_queries:
        from .data import load_corpus
        from .fusion import pseudo_queries

        corpus = args.corpus or manifest.get("source")
        if not corpus:
            sys.exit("clsr tune-alpha: error: the index does not record its corpus; pass --corpus")
        topics, qrels = pseudo_queries(load_corpus(corpus), args.pseudo_queries, seed=args.seed)
        where = f"{len(topics)} pseudo-queries from {corpus}"
    else:
        if args.split is None:
            sys.exit("clsr tune-alpha: error: --topics needs --split (a train or dev split)")
        if args.split in EVALUATION_SPLITS:
            sys.exit(f"clsr tune-alpha: error: refusing to tune on the {args.split!r} split: it is for reporting; "
                     "tune on a train or dev split, or on --pseudo-queries")
        topics, qrels = load_topics(args.topics, args.split), load_qrels(args.topics, args.split)
        where = f"{args.topics} {args.split} ({len(topics)} queries)"
    searcher = HybridSearcher(args.index, mode=args.hybrid_mode, query_side=args.hybrid_query,
                              normalization=args.normalization, depth=args.depth, **_concept_options(args, manifest))
    curve = tune_alpha(searcher, topics, qrels, metric=args.metric, relevance_threshold=args.relevance_threshold)
    best = best_alpha(curve)
    if args.json:
        print(json.dumps({"metric": args.metric, "tuned_on": where, "curve": curve, "best_alpha": best}, indent=2))
        return
    print(f"{args.metric} on {where}, alpha = weight of the sparse run:")
    for alpha, value in curve.items():
        print(f"  alpha {alpha:.1f}  {value:.4f}  {'#' * round(value * 50)}{'  <- best' if alpha == best else ''}")


def cmd_describe(args: argparse.Namespace) -> None:
    from collections import Counter

    from .describe import CATALOGUE_NAME, build_catalogue, write_catalogue

    describer = None if args.describer == "keywords" else args.describer
    if args.llm_url or args.llm_model:
        if not (args.llm_url and args.llm_model):
            sys.exit("clsr describe: error: the LLM describer needs both --llm-url and --llm-model")
        import os

        from .describe import LlmDescriber

        describer = LlmDescriber(args.llm_url, args.llm_model, api_key=os.environ.get(args.llm_api_key_env))
    entries = build_catalogue(args.index, corpus=args.corpus, top_passages=args.top_passages, describer=describer)
    output = Path(args.output) if args.output else Path(args.index) / CATALOGUE_NAME
    write_catalogue(entries, output)
    regions = Counter(e.region for e in entries)
    print(f"described {len(entries)} concepts ({', '.join(f'{n} {r}' for r, n in regions.most_common())}) "
          f"in {output}")
    for entry in sorted((e for e in entries if e.df), key=lambda e: e.rank)[:args.show]:
        print(f"  {entry.concept:<7} df {entry.df:>5}  {entry.region:<5}  {entry.description}")


def cmd_explain(args: argparse.Namespace) -> None:
    from .describe import CATALOGUE_NAME, load_catalogue
    from .explain import explain, format_explanation
    from .index import read_manifest
    from .search import ClsrSearcher

    if args.query is None and args.docid is None:
        sys.exit("clsr explain: error: give --query, --docid or both")
    if (args.query is None or args.docid is None) and not args.words:
        sys.exit("clsr explain: error: a score needs both --query and --docid; with one of them, ask for --words")
    searcher = ClsrSearcher(args.index, **_concept_options(args, read_manifest(args.index)))
    catalogue_path = Path(args.catalogue) if args.catalogue else Path(args.index) / CATALOGUE_NAME
    catalogue = load_catalogue(catalogue_path) if catalogue_path.exists() else None
    try:
        explanation = (explain(searcher, args.query, args.docid, catalogue, top=args.top)
                       if args.query is not None and args.docid is not None else None)
        if args.words:
            evidence = _word_evidence(args, searcher, explanation, catalogue)
    except KeyError as e:
        sys.exit(f"clsr explain: error: {e.args[0]} ({args.index})")
    except ValueError as e:
        sys.exit(f"clsr explain: error: {e}")
    if args.json:
        output = dict(explanation or {"query": args.query, "docid": args.docid})
        if args.words:
            output["evidence"] = evidence
        print(json.dumps(output, indent=2))
        return
    if explanation is not None:
        print(format_explanation(explanation))
    if args.words:
        from .evidence import format_word_evidence

        print(("\n" if explanation else "") + format_word_evidence(evidence, args.method))
    if catalogue is None:
        print(f"\n(no descriptions: run `clsr describe --index {args.index}` to write {CATALOGUE_NAME})")


def _word_evidence(args: argparse.Namespace, searcher, explanation: dict | None, catalogue) -> list[dict]:
    """`clsr explain --words`: the words driving the chosen concepts in the query and the document."""
    from .concepts import concept_latent
    from .evidence import EvidenceExplainer, match_evidence, passage_texts
    from .pyserini_encoders import cache_key

    if args.concept:
        concepts = [c.strip() for c in args.concept]
        for term in concepts:
            concept_latent(term)  # ValueError names a malformed term
    elif explanation is not None:
        concepts = [c["concept"] for c in explanation["shared"][:args.word_concepts]]
    elif args.query is not None:
        vector = searcher.searchable(searcher.query_encoder.encode(args.query))
        concepts = [t for t, _ in sorted(vector.items(), key=lambda item: (-item[1], item[0]))[:args.word_concepts]]
    else:
        from .concepts import concept_term

        activations, latents = searcher.doc_codes.code(args.docid)
        concepts = [concept_term(int(l)) for l, a in zip(latents, activations) if a > 0][:args.word_concepts]
    document = None
    if args.docid is not None:
        searcher.doc_codes.row(args.docid)  # KeyError names an unknown document before the corpus is read
        document = passage_texts(args.index, args.corpus).get(args.docid)
        if document is None:
            sys.exit(f"clsr explain: error: document {args.docid!r} is in the index but not in its corpus")
    query = cache_key(args.query) if args.query is not None else None  # the text the index encodes
    evidence = match_evidence(EvidenceExplainer.for_encoder(searcher.concept_encoder), concepts, query=query,
                              document=document, method=args.method, top=args.top_words)
    for item in evidence:
        entry = (catalogue or {}).get(item["concept"])
        item["description"] = entry.description if entry is not None else ""
    return evidence


def cmd_encode_queries(args: argparse.Namespace) -> None:
    from .data import load_topics
    from .index import read_manifest
    from .pyserini_encoders import ClsrQueryEncoder, write_query_cache

    topics = load_topics(args.topics, args.split)
    encoder = ClsrQueryEncoder(args.index, **_concept_options(args, read_manifest(args.index)))
    write_query_cache(encoder, topics, args.output, topics_tsv=args.topics_output)
    print(f"wrote {len(topics)} encoded queries to {args.output}"
          + (f" and their topics to {args.topics_output}" if args.topics_output else ""))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .data import load_qrels
    from .evaluate import evaluate, read_run

    scores = evaluate(read_run(args.run), load_qrels(args.qrels, args.split), args.metrics,
                      args.relevance_threshold)
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        for name, value in scores.items():
            print(f"{name:<12} {value:.4f}")


def cmd_train_sae(args: argparse.Namespace) -> None:
    import dataclasses

    import torch

    from .sae_data import DataRecipe, build_training_data
    from .sae_training import TrainConfig, Trainer

    encoder = _encoder(args)
    recipe = DataRecipe(sentences=args.sentences, spans_per_doc=args.spans_per_doc, neighbours=args.neighbours,
                        seed=args.seed)
    query_splits = {dataset: args.train_split for dataset in args.dataset} if args.train_split else None
    data, provenance = build_training_data(args.dataset, encoder, recipe, query_splits,
                                           unjudged_queries=args.unjudged_queries or ())
    config = TrainConfig(n_latents=args.n_latents, k=args.k, batch_size=args.batch_size, epochs=args.epochs,
                         lr=args.lr, seed=args.seed, auxk_alpha=args.auxk_alpha, dead_after=args.dead_after,
                         kl_weight=args.kl_weight, kl_sparse_weight=args.kl_sparse_weight, tau=args.tau,
                         tau_sparse=args.tau_sparse, kl_queries=args.kl_queries, multi_k=tuple(args.multi_k or ()),
                         max_steps=args.max_steps, device=args.device)
    print(f"training on {len(data.vectors)} vectors ({len(data.queries)} KL queries) from "
          f"{', '.join(map(str, args.dataset))}: {dataclasses.asdict(config)}")
    trainer = Trainer(data, config, args.output, encoder=encoder.config.to_dict(),
                      provenance={"data": provenance})
    if args.resume:
        trainer.resume()
    sae = trainer.fit(on_epoch=lambda epoch, summary: print(
        f"epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in summary.items())))
    if args.save_dtype == "fp16":
        sae.save_to_disk(args.output, dtype=torch.float16)
    print(f"saved the SAE to {args.output}")


def _sae_path(args: argparse.Namespace) -> Path:
    """--sae, or the bundled default SAE."""
    from .sae import default_sae_path

    sae_path = Path(args.sae) if args.sae else default_sae_path()
    if sae_path is None:
        sys.exit(f"clsr {args.command}: error: this clsr has no bundled SAE; pass --sae "
                 "(train one with `clsr train-sae`)")
    return sae_path


def _add_adaptation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("adaptation (fine-tuning the SAE on the corpus, no judgments)")
    group.add_argument("--adapt-steps", type=int, default=1500,
                       help="training steps of 512 vectors (default 1500: about 6 minutes on 2 free CPU cores)")
    group.add_argument("--adapt-lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    group.add_argument("--no-revive", dest="revive", action="store_false",
                       help="keep latents that never fire on this corpus as they are (default: re-initialise "
                            "them on its worst-reconstructed vectors)")


def _adapt_config(args: argparse.Namespace):
    from .sae_adaptation import AdaptConfig

    return AdaptConfig(steps=args.adapt_steps, lr=args.adapt_lr, revive=args.revive, device=args.device)


def _print_adaptation(report, encode_seconds: float) -> None:
    from .sae_adaptation import KEPT_COSINE

    print(f"adapted the SAE in {report.seconds:.0f} s (+{encode_seconds:.0f} s encoding): passage FVU "
          f"{report.fvu_before:.3f} -> {report.fvu_after:.3f}; {report.revived} latents dead on this corpus revived; "
          f"{report.kept}/{report.compared} base concepts ({report.kept_share:.0%}) kept their direction "
          f"(cosine > {KEPT_COSINE})")


def cmd_adapt_sae(args: argparse.Namespace) -> None:
    from .data import resolve
    from .dense import EncoderConfig
    from .sae import TopKSae
    from .sae_adaptation import adapt_to_corpus

    base_path = _sae_path(args)
    trained_on = TopKSae.load_from_disk(base_path).config.encoder
    encoder = _encoder(args, EncoderConfig.from_dict(trained_on) if trained_on else None)
    _, report, encode_seconds = adapt_to_corpus(base_path, str(resolve(args.corpus)), encoder, args.output,
                                                _adapt_config(args))
    _print_adaptation(report, encode_seconds)
    print(f"saved the adapted SAE to {args.output}; index with it: clsr index --sae {args.output} ...")
def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        sys.exit("clsr serve: error: the explorer needs the serve extra: pip install 'clsr[serve]'")
    from .index import read_manifest
    from .serve import port_is_free, serve

    manifest = read_manifest(args.index)
    if manifest["kind"] != "concepts":
        sys.exit(f"clsr serve: error: {args.index} is a {manifest['kind']} index; serve a concept index "
                 "(and pass BM25 or dense ones with --bm25/--dense)")
    for flag, path, kind in (("--bm25", args.bm25, "bm25"), ("--dense", args.dense, "dense")):
        if path and read_manifest(path)["kind"] != kind:
            sys.exit(f"clsr serve: error: {flag} {path} is not a {kind} index")
    if not port_is_free(args.host, args.port):
        sys.exit(f"clsr serve: error: port {args.port} on {args.host} is in use; pick another with --port")
    options = _concept_options(args, manifest)
    serve(args.index, host=args.host, port=args.port, threads=args.threads, bm25=args.bm25, dense=args.dense,
          catalogue=args.catalogue,
          corpus=args.corpus, alpha=args.alpha, **{k: v for k, v in options.items() if v is not None})


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.dataset, Path(args.work_dir), split=args.split, threads=args.threads, adapt=args.adapt)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clsr", description="Concept-Level Sparse Retrieval on Pyserini/Lucene: index passages as SAE concepts, "
                                "search, fuse, explain and steer, and evaluate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("encode", help="encode a corpus or topics to embeddings.npy + ids.txt",
                            description="Dense-encode a corpus (cached) or a set of topics.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--corpus", help=SOURCE_HELP)
    what.add_argument("--topics", help=SOURCE_HELP)
    p.add_argument("--split", default="test", help="qrels split whose queries to encode (default test)")
    p.add_argument("--output", required=True, help="folder for embeddings.npy, ids.txt and encoder.json")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_encode)

    p = commands.add_parser("index", help="build a concept, BM25 or dense index",
                            description="Build an index atomically (in a hidden folder beside it, renamed at the "
                                        "end); it gets a clsr-index.json manifest. A concept index is a Lucene "
                                        "impact index of each passage's top-K SAE concepts (pseudo-terms c<id>).")
    p.add_argument("--corpus", required=True, help=SOURCE_HELP)
    p.add_argument("--index", required=True, help="output index folder")
    p.add_argument("--kind", choices=["concepts", "bm25", "dense"], default="concepts",
                   help="what to build (default concepts)")
    p.add_argument("--threads", type=int, default=1, help="Lucene indexing threads (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index")
    group = p.add_argument_group("concept index")
    group.add_argument("--sae", help="SAE folder (default: the bundled one for all-MiniLM-L6-v2)")
    group.add_argument("--doc-k", type=int, help="concepts per passage (default: the SAE's trained k)")
    group.add_argument("--query-k", type=int, help="searchers' default concepts per query (default: the SAE's k)")
    group.add_argument("--query-mode", choices=["topk", "projected"], default="topk",
                       help="searchers' default query mode (default topk)")
    group.add_argument("--bits", type=int, default=8,
                       help="impact bits (default 8: impacts 1..255); more than 8 can overflow float32 scores")
    group.add_argument("--adapt", action="store_true",
                       help="adapt the SAE to this corpus first (as `clsr adapt-sae`) and keep it in the index's sae/")
    _add_adaptation_options(p)
    _add_encoder_options(p, default_help="the encoder the SAE was trained on")
    p.set_defaults(func=cmd_index)

    p = commands.add_parser("search", help="search an index for a set of topics and write a run file",
                            description="Mirrors python -m pyserini.search.lucene; the index's manifest picks "
                                        "the searcher.")
    p.add_argument("--index", required=True, help="a clsr index folder")
    p.add_argument("--topics", required=True, help=SOURCE_HELP)
    p.add_argument("--split", default="test", help="for a BEIR folder: the qrels split whose queries to run")
    p.add_argument("--output", required=True, help="run file to write")
    p.add_argument("--output-format", choices=["trec", "msmarco"], default="trec")
    p.add_argument("--hits", type=int, default=1000, help="hits per query (default 1000)")
    p.add_argument("--threads", type=int, default=1, help="search threads (default 1)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="queries handed to Lucene at once, searched by --threads threads (default 1: one by one)")
    p.add_argument("--remove-query", action="store_true", help="drop a hit whose docid is the query's id")
    p.add_argument("--explain", action="store_true",
                   help="write JSONL instead of a run: each hit with its top three shared concepts and their "
                        "descriptions (concept indexes; descriptions from concepts.jsonl if present)")
    p.add_argument("--run-tag", default="clsr", help="tag in the run file's last column")
    _add_concept_query_options(p)
    _add_hybrid_options(p)
    _add_steering_options(p)
    _add_encoder_options(p, default_help="the index's")
    p.set_defaults(func=cmd_search)

    p = commands.add_parser("fuse", help="fuse run files (interpolation or RRF), e.g. CL-SR with BM25",
                            description="Fuses TREC run files from clsr or Pyserini (BM25, SPLADE, dense); the "
                                        "output is a TREC run that python -m pyserini.fusion and trec_eval read.")
    p.add_argument("--runs", nargs="+", required=True, help="TREC run files (interpolation: exactly two)")
    p.add_argument("--output", required=True)
    p.add_argument("--method", choices=["interpolation", "rrf"], default="rrf", help="default rrf (any number of runs)")
    p.add_argument("--alpha", type=float, default=0.5, help="interpolation weight of the first run (default 0.5)")
    p.add_argument("--normalization", choices=["minmax", "zscore"], default="minmax",
                   help="per-query score normalisation before interpolation (default minmax)")
    p.add_argument("--rrf-k", type=int, default=60, help="RRF constant (default 60)")
    p.add_argument("--hits", type=int, default=1000, help="hits per query in the output (default 1000)")
    p.add_argument("--run-tag", default="clsr-fusion")
    p.set_defaults(func=cmd_fuse)

    p = commands.add_parser("tune-alpha", help="pick the hybrid's alpha on a train or dev split (never test), "
                                               "or on pseudo-queries drawn from the corpus",
                            description="Prints the metric over alpha = 0, 0.1, ..., 1 for the hybrid search of a "
                                        "concept index. Test-type splits (test, dev.small, dl19, dl20) are refused. "
                                        "With no tuning split, --pseudo-queries N draws N sentences or spans from "
                                        "the indexed corpus, each with its source passage as the one relevant "
                                        "document: no judgments are read.")
    p.add_argument("--index", required=True, help="a concept index")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--topics", help="a BEIR folder or collection name (topics and qrels)")
    what.add_argument("--pseudo-queries", type=int, metavar="N", help="tune on N pseudo-queries from the corpus")
    p.add_argument("--split", help="with --topics: a train or dev split, e.g. train or dev")
    p.add_argument("--corpus", help="with --pseudo-queries: the corpus (default: the one the index was built from)")
    p.add_argument("--seed", type=int, default=0, help="pseudo-query sampling seed")
    p.add_argument("--metric", default="ndcg@10", help="metric to maximise (default ndcg@10)")
    p.add_argument("--relevance-threshold", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_concept_query_options(p)
    _add_hybrid_options(p, tuning=True)
    _add_encoder_options(p, default_help="the index's")
    p.set_defaults(func=cmd_tune_alpha)

    p = commands.add_parser("describe", help="catalogue and describe every concept of a concept index",
                            description="For each concept: document frequency, rank, region (head/torso/tail), "
                                        "mean and max activation, top passages and a keyword description "
                                        "(c-TF-IDF of its top passages against the corpus; offline).")
    p.add_argument("--index", required=True, help="a concept index")
    p.add_argument("--corpus", help="the indexed passages (default: the source in the index's manifest)")
    p.add_argument("--output", help="catalogue file (default: concepts.jsonl in the index folder)")
    p.add_argument("--top-passages", type=int, default=10, help="top activating passages kept per concept")
    p.add_argument("--show", type=int, default=10, help="head concepts to print (default 10)")
    p.add_argument("--describer", choices=["keywords", "evidence"], default="keywords",
                   help="keywords: c-TF-IDF of the top passages (fast); evidence: the words that make the concept "
                        "fire in its top passages, checked against where it fires, marked broad:/unclear: when so "
                        "(one encoder pass per passage)")
    group = p.add_argument_group("LLM describer (optional; off unless both are given)")
    group.add_argument("--llm-url", help="an OpenAI-compatible API base URL, e.g. http://localhost:8000/v1")
    group.add_argument("--llm-model", help="the model name to ask for 1-8 word labels")
    group.add_argument("--llm-api-key-env", default="CLSR_LLM_API_KEY",
                       help="environment variable holding the API key, if the endpoint needs one")
    p.set_defaults(func=cmd_describe)

    p = commands.add_parser("explain", help="why a document matched a query, concept by concept, down to words",
                            description="The concepts a query and a document share, each with query weight, "
                                        "document weight, contribution (their product; they sum to the Lucene "
                                        "score) and description, plus the query's and the document's top concepts. "
                                        "--words adds, for each concept, the words of the query and of the "
                                        "passage that drive it (either text alone works too).")
    p.add_argument("--index", required=True, help="a concept index")
    p.add_argument("--query", help="query text")
    p.add_argument("--docid", help="document id")
    p.add_argument("--catalogue", help="concepts.jsonl (default: the index folder's, if written by clsr describe)")
    p.add_argument("--top", type=int, default=10, help="top query and document concepts shown (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    group = p.add_argument_group("word-level evidence")
    group.add_argument("--words", action="store_true", help="show the words that drive each concept")
    group.add_argument("--concept", action="append", metavar="cID",
                       help="concepts to explain word by word (repeatable; default: the top shared concepts, or "
                            "the text's own top concepts)")
    group.add_argument("--word-concepts", type=int, default=5, help="how many concepts by default (default 5)")
    group.add_argument("--top-words", type=int, default=5, help="words shown per concept and text (default 5)")
    group.add_argument("--method", choices=["pooling", "occlusion"], default="pooling",
                       help="pooling: each word's share through mean pooling, one encoder pass (default); "
                            "occlusion: the activation lost when the word is deleted, one pass per word (slow)")
    group.add_argument("--corpus", help="the indexed passages (default: the source in the index's manifest)")
    _add_concept_query_options(p)
    _add_encoder_options(p, default_help="the index's")
    p.set_defaults(func=cmd_explain)

    p = commands.add_parser("encode-queries", help="pre-encode topics for stock Pyserini (--impact --encoder FILE)",
                            description="Writes the JSONL query cache Pyserini's CachedDataQueryEncoder reads "
                                        '({"id", "contents", "vector"}), so that python -m pyserini.search.lucene '
                                        "--index IDX --topics TOPICS --impact --encoder FILE gives clsr search's run.")
    p.add_argument("--index", required=True, help="the concept index the queries are for")
    p.add_argument("--topics", required=True, help=SOURCE_HELP)
    p.add_argument("--split", default="test", help="for a BEIR folder: the qrels split whose queries to encode")
    p.add_argument("--output", required=True, help="JSONL file to write")
    p.add_argument("--topics-output", help="also write the topics as a qid<TAB>text file for pyserini --topics")
    _add_concept_query_options(p)
    _add_encoder_options(p, default_help="the index's")
    p.set_defaults(func=cmd_encode_queries)

    p = commands.add_parser("evaluate", help="score a run file: nDCG@10, MRR@10, R@100, R@1000",
                            description="trec_eval-compatible scores (as -c: averaged over all judged queries).")
    p.add_argument("--run", required=True, help="TREC or MS MARCO run file")
    p.add_argument("--qrels", required=True, help="a qrels file (BEIR or TREC) or a BEIR folder / collection name")
    p.add_argument("--split", default="test", help="for a BEIR folder: which qrels split (default test)")
    p.add_argument("--metrics", nargs="+", default=["ndcg@10", "mrr@10", "recall@100", "recall@1000"],
                   help="metrics as name@cutoff (ndcg, mrr, recall)")
    p.add_argument("--relevance-threshold", type=int, default=1,
                   help="lowest grade counted relevant by MRR and recall (2 for TREC DL19/DL20; nDCG uses grades)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("train-sae", help="fit a top-K sparse autoencoder on a corpus's embeddings",
                            description="Unsupervised, like fitting a PQ codebook on the corpus it will index: "
                                        "passages, their sentences and random spans, plus training queries "
                                        "(never test ones) for the retrieval KL terms.")
    p.add_argument("--dataset", action="append", required=True, help=SOURCE_HELP + " (repeat for several)")
    p.add_argument("--output", required=True, help="folder for sae.safetensors, config.json and checkpoint/")
    p.add_argument("--train-split", action="append",
                   help="query split(s) to train on (default: every qrels split but dev, test, dev.small, dl19, dl20; "
                        "test-type splits are always refused)")
    p.add_argument("--n-latents", type=int, default=8192, help="dictionary size (default 8192)")
    p.add_argument("-k", "--k", type=int, default=128, help="active concepts per vector (default 128)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=512, help="vectors per step (default 512)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 2e-4/sqrt(n_latents/16384))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--auxk-alpha", type=float, default=1 / 32, help="weight of the AuxK dead-latent loss")
    p.add_argument("--dead-after", type=int, default=200_000, help="vectors without firing before a latent is dead")
    p.add_argument("--kl-weight", type=float, default=0.0, help="weight of KL on reconstructed query.doc scores")
    p.add_argument("--kl-sparse-weight", type=float, default=0.0, help="weight of KL on top-K code dot products")
    p.add_argument("--tau", type=float, default=0.05, help="softmax temperature of the KL target")
    p.add_argument("--tau-sparse", type=float, default=0.05, help="temperature of the code dot products")
    p.add_argument("--kl-queries", type=int, default=64, help="training queries per step for the KL terms")
    p.add_argument("--multi-k", type=int, action="append",
                   help="a smaller K whose FVU and code KL are also trained (Multi-TopK; repeat for several), "
                        "so that indexes built with --doc-k K' keep their quality")
    p.add_argument("--max-steps", type=int, help="stop after this many steps, even mid-epoch")
    p.add_argument("--unjudged-queries", action="append", metavar="DATASET",
                   help="train on every query of this dataset's queries file (only for a folder without qrels, "
                        "e.g. general-english's unjudged questions)")
    p.add_argument("--neighbours", type=int, default=8, help="nearest documents per training query (default 8)")
    p.add_argument("--spans-per-doc", type=int, default=5, help="random 4-20-word spans per passage (default 5)")
    p.add_argument("--no-sentences", dest="sentences", action="store_false", help="do not add sentence splits")
    p.add_argument("--save-dtype", choices=["fp32", "fp16"], default="fp32", help="fp16 halves the file")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_train_sae)

    p = commands.add_parser("adapt-sae", help="fine-tune an SAE on a new corpus's own text (no judgments)",
                            description="Warm-starts from an SAE (default: the bundled one), revives latents that "
                                        "never fire on the corpus, and trains a fixed number of steps on the "
                                        "corpus's passages, sentences and random spans (spans stand in as the KL "
                                        "terms' queries). Concept ids keep their meaning where the corpus uses "
                                        "them. Never reads queries or qrels.")
    p.add_argument("--corpus", required=True, help=SOURCE_HELP)
    p.add_argument("--output", required=True, help="folder for the adapted sae.safetensors and config.json")
    p.add_argument("--sae", help="SAE to start from (default: the bundled one)")
    _add_adaptation_options(p)
    _add_encoder_options(p, default_help="the encoder the SAE was trained on")
    p.set_defaults(func=cmd_adapt_sae)

    p = commands.add_parser("serve", help="the concept explorer: a local web page and JSON API over a concept index",
                            description="Serves a search page whose hits show their score split into concepts, "
                                        "the words behind each concept, concept pages, steering sliders and, with "
                                        "--bm25/--dense, a side-by-side comparison. JSON API described at "
                                        "/openapi.json. Needs the serve extra (pip install 'clsr[serve]').")
    p.add_argument("--index", required=True, help="a concept index")
    p.add_argument("--port", type=int, default=8080, help="default 8080")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--bm25", help="a BM25 index of the same corpus, to compare")
    p.add_argument("--dense", help="a dense index of the same corpus, to compare")
    p.add_argument("--alpha", type=float, default=0.5, help="the hybrid's sparse weight (default 0.5)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: one query gains nothing from more, and on a busy machine they "
                        "wait on each other)")
    p.add_argument("--catalogue", help="concepts.jsonl (default: the index folder's)")
    p.add_argument("--corpus", help="the indexed passages (default: the source in the index's manifest)")
    _add_concept_query_options(p)
    _add_encoder_options(p, default_help="the index's")
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("demo", help="CL-SR, BM25 and dense side by side on a collection",
                            description="Builds (or reuses) the concept, BM25 and dense indexes and the concept "
                                        "catalogue, runs the test queries, prints a table and explained hits.")
    p.add_argument("--dataset", default="scifact", help=SOURCE_HELP + " (default scifact)")
    p.add_argument("--split", default="test")
    p.add_argument("--work-dir", default="runs/demo", help="where indexes and runs go (default runs/demo)")
    p.add_argument("--adapt", action="store_true", help="adapt the bundled SAE to the corpus first (clsr adapt-sae)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .data import DataError
    from .index import InvalidIndexError
    from .sae import SaeMismatchError, SaeNotFoundError

    try:
        args.func(args)
    except (DataError, InvalidIndexError, SaeMismatchError, SaeNotFoundError) as e:
        sys.exit(f"clsr {args.command}: error: {e}")


if __name__ == "__main__":
    main()
