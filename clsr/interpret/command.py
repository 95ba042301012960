"""The interpretation stage's commands: `clsr describe`, `clsr explain` and `clsr serve`
(``python -m clsr.interpret describe|explain|serve``). The work is in `clsr.interpret.describe`,
`clsr.interpret.explain` and `clsr.interpret.serve`."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from clsr.interpret.describe import (
    CATALOGUE_NAME,
    DEFAULT_DESCRIBER,
    DESCRIBE_PASSAGES,
    LlmDescriber,
    build_catalogue,
    ensure_catalogue,
    write_catalogue,
)
from clsr.interpret.explain import explain, format_explanation
from clsr.interpret.serve import port_is_free, serve
from clsr.options import (
    SOURCE_HELP,
    Command,
    UsageError,
    add_concept_query_options,
    add_encoder_options,
    concept_encoder_options,
)


def _note(text: str) -> None:
    import sys

    print(f"note: {text}", file=sys.stderr, flush=True)


def _add_describe_arguments(parser) -> None:
    parser.add_argument("--index", required=True, help="a concept index")
    parser.add_argument("--corpus", help="the indexed passages (default: the source in the index's manifest)")
    parser.add_argument("--output", help="catalogue file (default: concepts.jsonl in the index folder)")
    parser.add_argument("--top-passages", type=int, default=10, help="top activating passages kept per concept")
    parser.add_argument("--show", type=int, default=10, help="head concepts to print (default 10)")
    parser.add_argument("--max-passages", type=int, default=DESCRIBE_PASSAGES,
                        help="the evidence describer reads at most this many passages besides each used concept's "
                             "top passages: a larger index is described from a seeded sample, its word evidence "
                             "from a fifth of it and each concept's strongest passages (default "
                             f"{DESCRIBE_PASSAGES}; 0: every passage, however many)")
    parser.add_argument("--describer", choices=["keywords", "evidence"], default=DEFAULT_DESCRIBER,
                        help="evidence (default, what clsr index uses): the words that make the concept fire in its "
                             "top and sampled firing passages, chosen to predict where it fires under both an "
                             "embedding simulator and the keyword count, marked broad:/unclear: when so, "
                             "'; not: ...' the passages it stays silent on (one encoder pass per passage used); "
                             "keywords: c-TF-IDF of the top passages (seconds)")
    group = parser.add_argument_group("LLM describer (optional; off unless both are given)")
    group.add_argument("--llm-url", help="an OpenAI-compatible API base URL, e.g. http://localhost:8000/v1")
    group.add_argument("--llm-model", help="the model name to ask for 1-8 word labels")
    group.add_argument("--llm-api-key-env", default="CLSR_LLM_API_KEY",
                       help="environment variable holding the API key, if the endpoint needs one")


def _run_describe(args) -> None:
    if args.max_passages < 0:
        raise UsageError(f"--max-passages must be 0 (no bound) or more, not {args.max_passages}")
    describer = None if args.describer == "keywords" else args.describer
    if args.llm_url or args.llm_model:
        if not (args.llm_url and args.llm_model):
            raise UsageError("the LLM describer needs both --llm-url and --llm-model")
        describer = LlmDescriber(args.llm_url, args.llm_model, api_key=os.environ.get(args.llm_api_key_env))
    if args.output:  # before the describing, which takes minutes
        from clsr.index.atomic import FILE, check_replaceable

        check_replaceable(args.output, FILE, {"the corpus": args.corpus, "the index": args.index})
    elif not _can_write_into(Path(args.index)):  # a read-only or another user's index: said before the minutes
        raise UsageError(f"{args.index} cannot be written here: pass --output FILE, and give that file to explain, "
                         "serve and search with --catalogue")
    entries = build_catalogue(args.index, corpus=args.corpus, top_passages=args.top_passages, describer=describer,
                              max_passages=args.max_passages or None)
    output = Path(args.output) if args.output else Path(args.index) / CATALOGUE_NAME
    write_catalogue(entries, output)
    counts = Counter(e.region for e in entries)
    print(f"described {len(entries)} concepts ({', '.join(f'{n} {r}' for r, n in counts.most_common())}) "
          f"in {output}")
    for entry in sorted((e for e in entries if e.df), key=lambda e: e.rank)[:args.show]:
        print(f"  {entry.concept:<7} df {entry.df:>5}  {entry.region:<5}  {entry.description}")


def _can_write_into(folder: Path) -> bool:
    """Whether this process can create a file in `folder` (tried, not guessed from the modes: root, ACLs and
    read-only mounts each decide otherwise)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".clsr-write-test-"):
            return True
    except OSError:
        return False


DESCRIBE_COMMAND = Command("describe", "For each concept: document frequency, rank, region (head/torso/tail), mean and "
                              "max activation, top passages and a keyword description (c-TF-IDF of its top passages "
                              "against the corpus; offline).", _add_describe_arguments, _run_describe)


def _add_explain_arguments(parser) -> None:
    parser.add_argument("--index", required=True, help="a concept index")
    parser.add_argument("--query", help="query text")
    parser.add_argument("--topics", help="take the query text from these topics (with --qid); " + SOURCE_HELP)
    parser.add_argument("--split", default="test", help="for a BEIR folder given to --topics: the qrels split")
    parser.add_argument("--qid", help="the query's id: its text from --topics, and the hit --remove-query drops")
    parser.add_argument("--remove-query", action="store_true",
                        help="rank without the document whose id is --qid, as `clsr search --remove-query` does "
                             "(collections whose queries are documents too, e.g. ArguAna)")
    parser.add_argument("--docid", help="document id")
    parser.add_argument("--catalogue", help="concepts.jsonl (default: the index folder's, if written by clsr describe)")
    parser.add_argument("--top", type=int, default=10, help="top query and document concepts shown (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    group = parser.add_argument_group("word-level evidence")
    group.add_argument("--words", action="store_true", help="show the words that drive each concept")
    group.add_argument("--concept", action="append", metavar="cID",
                       help="concepts to explain word by word (repeatable; default: the top shared concepts, or "
                            "the text's own top concepts)")
    group.add_argument("--word-concepts", type=int, default=5, help="how many concepts by default (default 5)")
    group.add_argument("--top-words", type=int, default=5,
                       help="words shown per concept and text (default 5); a repeated word is shown once, with its "
                            "occurrences' scores summed")
    group.add_argument("--method", choices=["pooling", "occlusion"], default="pooling",
                       help="pooling: each word's share through mean pooling, one encoder pass (default); "
                            "occlusion: the activation lost when the word is deleted, one pass per word (slow)")
    group.add_argument("--corpus", help="the indexed passages (default: the source in the index's manifest)")
    add_concept_query_options(parser)
    add_encoder_options(parser, default_help="the index's")


def _run_explain(args) -> None:
    from clsr.index import read_manifest
    from clsr.interpret.describe import CATALOGUE_NAME, load_catalogue
    from clsr.search import ClsrSearcher

    if args.topics is not None:
        from clsr.data import load_topics

        if args.qid is None or args.query is not None:
            raise UsageError("--topics needs --qid (and no --query)")
        topics = load_topics(args.topics, args.split)
        if args.qid not in topics:
            raise UsageError(f"query {args.qid!r} is not in the topics {args.topics}")
        args.query = topics[args.qid]
    if args.remove_query and args.qid is None:
        raise UsageError("--remove-query needs --qid (the id whose document is left out of the ranking)")
    if args.query is None and args.docid is None:
        raise UsageError("give --query, --docid or both")
    if (args.query is None or args.docid is None) and not args.words:
        raise UsageError("a score needs both --query and --docid; with one of them, ask for --words")
    searcher = ClsrSearcher(args.index, **concept_encoder_options(args, read_manifest(args.index)))
    catalogue = (load_catalogue(args.catalogue) if args.catalogue
                 else ensure_catalogue(args.index, corpus=args.corpus, note=_note)) or None
    try:
        explanation = (explain(searcher, args.query, args.docid, catalogue, top=args.top,
                               remove_docid=args.qid if args.remove_query else None)
                       if args.query is not None and args.docid is not None else None)
        if args.words:
            evidence = _word_evidence(args, searcher, explanation, catalogue)
    except KeyError as e:
        raise UsageError(f"{e.args[0]} ({args.index})") from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.json:
        output = dict(explanation or {"query": args.query, "docid": args.docid})
        if args.words:
            output["evidence"] = evidence
        print(json.dumps(output, indent=2))
        return
    if explanation is not None:
        print(format_explanation(explanation))
    if args.words:
        from clsr.interpret.evidence import format_word_evidence

        print(("\n" if explanation else "") + format_word_evidence(evidence, args.method))
    if catalogue is None:
        print(f"\n(no descriptions: run `clsr describe --index {args.index}` to write {CATALOGUE_NAME})")


def _word_evidence(args, searcher, explanation: dict | None, catalogue) -> list[dict]:
    """`clsr explain --words`: the words driving the chosen concepts in the query and the document."""
    from clsr.index.concepts import concept_latent
    from clsr.interpret.evidence import EvidenceExplainer, match_evidence, passage_texts
    from clsr.search.pyserini import cache_key

    if args.concept:
        concepts = [c.strip() for c in args.concept]
        for term in concepts:
            concept_latent(term)  # ValueError names a malformed term
    elif explanation is not None:  # the shared concepts, the specific ones first (words need no evidence)
        concepts = [c["concept"] for c in explanation["shared"] if c["kind"] != "word"][:args.word_concepts]
    elif args.query is not None:
        from clsr.index.words import is_word_term

        vector = searcher.searchable(searcher.query_encoder.encode(args.query))
        concepts = [t for t, _ in sorted(vector.items(), key=lambda item: (-item[1], item[0]))
                    if not is_word_term(t)][:args.word_concepts]
    else:
        from clsr.index.concepts import concept_term

        activations, latents = searcher.doc_codes.code(args.docid)
        concepts = [concept_term(int(l)) for l, a in zip(latents, activations) if a > 0][:args.word_concepts]
    document = None
    if args.docid is not None:
        searcher.doc_codes.row(args.docid)  # KeyError names an unknown document before the corpus is read
        document = passage_texts(args.index, args.corpus).get(args.docid)
        if document is None:
            raise UsageError(f"document {args.docid!r} is in the index but not in its corpus")
    query = cache_key(args.query) if args.query is not None else None  # the text the index encodes
    evidence = match_evidence(EvidenceExplainer.for_encoder(searcher.concept_encoder), concepts, query=query,
                              document=document, method=args.method, top=args.top_words, by_word=True)
    for item in evidence:
        entry = (catalogue or {}).get(item["concept"])
        item["description"] = entry.description if entry is not None else ""
    return evidence


EXPLAIN_COMMAND = Command(
    "explain",
    "The concepts a query and a document share, each with query weight, document weight, contribution (their "
    "product; they sum to the Lucene score) and description, plus the query's and the document's top concepts. "
    "--words adds, for each concept, the words of the query and of the passage that drive it (either text alone "
    "works too).",
    _add_explain_arguments, _run_explain)


def _add_serve_arguments(parser) -> None:
    from clsr.fusion import DEFAULT_ALPHA

    parser.add_argument("--index", required=True, help="a concept index")
    parser.add_argument("--port", type=int, default=8080, help="default 8080")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    parser.add_argument("--allowed-hosts", nargs="+", default=[], metavar="NAME",
                        help="Host names to answer besides localhost, 127.0.0.1, [::1] and --host, for a deliberate "
                             "use beyond this machine (e.g. the machine's LAN name or address; *.example.org for a "
                             "domain, * for any); requests for other names get 421, against DNS rebinding")
    parser.add_argument("--bm25", help="a BM25 index of the same corpus, to compare")
    parser.add_argument("--dense", help="a dense index of the same corpus, to compare")
    parser.add_argument("--alpha", type=float, default=None,
                        help="the hybrid's sparse weight (default: the one tuned when the index was built; "
                             f"{DEFAULT_ALPHA} for an index without one)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: one query gains nothing from more, and on a busy machine they "
                             "wait on each other)")
    parser.add_argument("--catalogue", help="concepts.jsonl (default: the index folder's)")
    parser.add_argument("--corpus", help="the indexed passages (default: the source in the index's manifest)")
    add_concept_query_options(parser)
    add_encoder_options(parser, default_help="the index's")


def _run_serve(args) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("the explorer needs the serve extra: pip install 'clsr[serve]'") from None
    from clsr.index import read_manifest

    manifest = read_manifest(args.index)
    if manifest.kind != "concepts":
        raise UsageError(f"{args.index} is a {manifest.kind} index; serve a concept index (and pass BM25 or dense "
                         "ones with --bm25/--dense)")
    for flag, path, kind in (("--bm25", args.bm25, "bm25"), ("--dense", args.dense, "dense")):
        if path and read_manifest(path).kind != kind:
            raise UsageError(f"{flag} {path} is not a {kind} index")
    if not port_is_free(args.host, args.port):
        raise UsageError(f"port {args.port} on {args.host} is in use; pick another with --port")
    if not args.catalogue:
        ensure_catalogue(args.index, corpus=args.corpus, note=_note)  # described once, before the server starts
    options = concept_encoder_options(args, manifest)
    serve(args.index, host=args.host, port=args.port, threads=args.threads, allowed_hosts=args.allowed_hosts,
          bm25=args.bm25, dense=args.dense, catalogue=args.catalogue, corpus=args.corpus, alpha=args.alpha,
          **{k: v for k, v in options.items() if v is not None})


SERVE_COMMAND = Command(
    "serve",
    "The concept explorer: serves a search page whose hits show their score split into concepts, the words behind "
    "each concept, concept pages, steering sliders and, with --bm25/--dense, a side-by-side comparison. JSON API "
    "described at /openapi.json. Needs the serve extra (pip install 'clsr[serve]').",
    _add_serve_arguments, _run_serve)

COMMANDS = (DESCRIBE_COMMAND, EXPLAIN_COMMAND, SERVE_COMMAND)
