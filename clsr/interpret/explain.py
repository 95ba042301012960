"""Why a document matched a query, concept by concept, with descriptions from the catalogue.

A concept index scores a document by the integer dot product of query and document impacts, so
the explanation is exact: each shared concept contributes query weight x document weight, and
the contributions sum to Lucene's score.

Run ``clsr explain --index IDX --query TEXT --docid ID [--json]``, or take the query from a topics file
with ``--topics SOURCE --qid ID``; ``--remove-query`` ranks as ``clsr search --remove-query`` does.
"""

from __future__ import annotations

from collections.abc import Mapping

from clsr.interpret.describe import ConceptEntry

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
