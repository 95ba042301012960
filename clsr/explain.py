"""Why a document matched a query, concept by concept, with descriptions from the catalogue.

A concept index scores a document by the integer dot product of query and document impacts, so
the explanation is exact: each shared concept contributes query weight x document weight, and
the contributions sum to Lucene's score.

Run ``clsr explain --index IDX --query TEXT --docid ID [--json]``, or take the query from a topics file
with ``--topics SOURCE --qid ID``; ``--remove-query`` ranks as ``clsr search --remove-query`` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .describe import ConceptEntry
from .options import SOURCE_HELP, Command, UsageError, add_concept_query_options, add_encoder_options, main_for

EXPLAIN_DEPTH = 1000  # how deep Lucene is searched to find the document's own score and rank
QUERY_ECHO_CHARS = 200  # a query-by-document query (ArguAna: 3,500 characters) is shown cut to this


def _described(term: str, catalogue: Mapping[str, ConceptEntry] | None) -> str:
    entry = (catalogue or {}).get(term)
    return entry.description if entry is not None else ""


def explain(searcher, query: str, docid: str, catalogue: Mapping[str, ConceptEntry] | None = None,
            top: int = 10, remove_docid: str | None = None) -> dict:
    """{"score", "rank", "shared": [...], "query_concepts": [...], "doc_concepts": [...]} for one match.

    ``score`` is Lucene's, found by searching ``EXPLAIN_DEPTH`` deep (``rank`` is None and the
    score is the sum of contributions when the document ranks below that). ``remove_docid`` is left
    out of the ranking, as ``clsr search --remove-query`` drops the hit whose docid is the query's id
    (collections whose queries are documents too, e.g. ArguAna), so the rank is the run's.
    """
    # Through search_vector and doc_vector, so any concept backend explains alike (Lucene, Milvus).
    with searcher.query_encoder.encoded([query]):
        vector = searcher.query_encoder.encode(query)
    hits = [hit for hit in searcher.search_vector(vector, EXPLAIN_DEPTH + (remove_docid is not None))
            if hit.docid != remove_docid]
    shared = searcher.shared_concepts(vector, docid)
    found = next(((rank, float(h.score)) for rank, h in enumerate(hits, 1) if h.docid == docid), None)
    doc_vector = sorted(searcher.doc_vector(docid).items(), key=lambda item: (-item[1], item[0]))
    query_vector = sorted(searcher.searchable(vector).items(), key=lambda item: (-item[1], item[0]))
    return {
        "query": query, "docid": docid,
        "score": found[1] if found else float(sum(c.contribution for c in shared)),
        "rank": found[0] if found else None,
        "shared": [{"concept": c.concept, "query_weight": c.query_weight, "doc_weight": c.doc_weight,
                    "contribution": c.contribution, "description": _described(c.concept, catalogue)}
                   for c in shared],
        "query_concepts": [{"concept": t, "weight": w, "description": _described(t, catalogue)}
                           for t, w in query_vector[:top]],
        "doc_concepts": [{"concept": t, "weight": w, "description": _described(t, catalogue)}
                         for t, w in doc_vector[:top]],
    }


def format_explanation(explanation: dict, shared_rows: int = 15) -> str:
    """The explanation as a readable table."""
    rank = explanation["rank"]
    query = explanation["query"]
    if len(query) > QUERY_ECHO_CHARS:
        query = f"{query[:QUERY_ECHO_CHARS].rstrip()}... ({len(explanation['query']):,} characters)"
    lines = [f"query: {query}",
             f"document {explanation['docid']}: score {explanation['score']:.0f}"
             + (f" (rank {rank})" if rank else f" (not in the top {EXPLAIN_DEPTH})"), "",
             f"{'concept':<8} {'query':>5} {'doc':>5} {'contrib':>8} {'share':>6}  description"]
    total = sum(c["contribution"] for c in explanation["shared"]) or 1
    for c in explanation["shared"][:shared_rows]:
        lines.append(f"{c['concept']:<8} {c['query_weight']:>5} {c['doc_weight']:>5} {c['contribution']:>8} "
                     f"{c['contribution'] / total:>6.1%}  {c['description']}")
    if len(explanation["shared"]) > shared_rows:
        rest = explanation["shared"][shared_rows:]
        lines.append(f"... {len(rest)} more shared concepts, {sum(c['contribution'] for c in rest)} in all")
    lines.append(f"{'sum':<8} {'':>5} {'':>5} {sum(c['contribution'] for c in explanation['shared']):>8}")
    for title, key in (("query's top concepts", "query_concepts"), ("document's top concepts", "doc_concepts")):
        lines += ["", title + ":"]
        lines += [f"  {c['concept']:<8} {c['weight']:>4}  {c['description']}" for c in explanation[key]]
    return "\n".join(lines)


# -- the command line: `clsr explain` / `python -m clsr.explain` --------------------------------------------

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
    group.add_argument("--top-words", type=int, default=5, help="words shown per concept and text (default 5)")
    group.add_argument("--method", choices=["pooling", "occlusion"], default="pooling",
                       help="pooling: each word's share through mean pooling, one encoder pass (default); "
                            "occlusion: the activation lost when the word is deleted, one pass per word (slow)")
    group.add_argument("--corpus", help="the indexed passages (default: the source in the index's manifest)")
    add_concept_query_options(parser)
    add_encoder_options(parser, default_help="the index's")


def _run_explain(args) -> None:
    from .describe import CATALOGUE_NAME, load_catalogue
    from .index import concept_encoder_options, read_manifest
    from .search import ClsrSearcher

    if args.topics is not None:
        from .data import load_topics

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
    catalogue_path = Path(args.catalogue) if args.catalogue else Path(args.index) / CATALOGUE_NAME
    catalogue = load_catalogue(catalogue_path) if catalogue_path.exists() else None
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
        from .evidence import format_word_evidence

        print(("\n" if explanation else "") + format_word_evidence(evidence, args.method))
    if catalogue is None:
        print(f"\n(no descriptions: run `clsr describe --index {args.index}` to write {CATALOGUE_NAME})")


def _word_evidence(args, searcher, explanation: dict | None, catalogue) -> list[dict]:
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
            raise UsageError(f"document {args.docid!r} is in the index but not in its corpus")
    query = cache_key(args.query) if args.query is not None else None  # the text the index encodes
    evidence = match_evidence(EvidenceExplainer.for_encoder(searcher.concept_encoder), concepts, query=query,
                              document=document, method=args.method, top=args.top_words)
    for item in evidence:
        entry = (catalogue or {}).get(item["concept"])
        item["description"] = entry.description if entry is not None else ""
    return evidence


COMMAND = Command(
    "explain",
    "The concepts a query and a document share, each with query weight, document weight, contribution (their "
    "product; they sum to the Lucene score) and description, plus the query's and the document's top concepts. "
    "--words adds, for each concept, the words of the query and of the passage that drive it (either text alone "
    "works too).",
    _add_explain_arguments, _run_explain)


def main(argv=None) -> None:
    main_for(COMMAND, argv)


if __name__ == "__main__":
    main()
