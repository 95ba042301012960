"""Why a document matched a query, term by term, with descriptions from the catalogue.

A concept index scores a document by the integer dot product of query and document impacts, so
the explanation is exact: each shared term contributes query weight x document weight, and
the contributions sum to Lucene's score. In an index with words, the terms are words and concepts.

They are shown in the order a person reads evidence (`reading_order`): the words first, then the specific
concepts, then the broad ones (a concept firing on at least BROAD_SHARE of the passages, such as "people, risk,
health" on 87% of ArguAna's), folded into one line with their share of the score.

Run ``clsr explain --index IDX --query TEXT --docid ID [--json]``, or take the query from a topics file
with ``--topics SOURCE --qid ID``; ``--remove-query`` ranks as ``clsr search --remove-query`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from clsr.interpret.describe import ConceptEntry
from clsr.interpret.describers import BROAD_SHARE

EXPLAIN_DEPTH = 1000  # how deep Lucene is searched to find the document's own score and rank
QUERY_ECHO_CHARS = 200  # a query-by-document query (ArguAna: 3,500 characters) is shown cut to this


def _described(term: str, catalogue: Mapping[str, ConceptEntry] | None) -> str:
    entry = (catalogue or {}).get(term)
    return entry.description if entry is not None else ""


KINDS = ("word", "specific", "broad")  # the reading order


class TermKinds:
    """Which kind each shared term is: ``word`` (an index's word, ``w:...``), ``broad`` (a concept firing on at least
    BROAD_SHARE of the passages) or ``specific`` (any other concept). ``df``: each concept's passage count, by
    latent; ``documents``: how many passages the index holds."""

    def __init__(self, df: np.ndarray, documents: int):
        self.share = np.asarray(df, np.float64) / max(documents, 1)

    @classmethod
    def for_searcher(cls, searcher, catalogue: Mapping[str, ConceptEntry] | None = None) -> TermKinds:
        """From the searcher's doc_codes (a Lucene concept index), else from the broad concepts a Milvus export
        recorded, else from the catalogue's document frequencies (an older export), else every concept is
        specific."""
        documents = searcher.manifest.documents
        n_latents = searcher.manifest.sae.n_latents
        codes = getattr(searcher, "doc_codes", None)
        if codes is not None:
            latents, activations = np.asarray(codes.latents, np.int64), np.asarray(codes.activations)
            return cls(np.bincount(latents[activations > 0], minlength=n_latents), documents)
        broad = getattr(searcher, "broad_concepts", None)
        if broad is not None:  # only which are broad is known: give those every passage, the others none
            df = np.zeros(n_latents)
            df[np.asarray(broad, np.int64)] = documents
            return cls(df, documents)
        df = np.zeros(n_latents)
        for entry in (catalogue or {}).values():
            df[entry.latent] = entry.df
        return cls(df, documents)

    def kind(self, term: str) -> str:
        from clsr.index.concepts import concept_latent
        from clsr.index.words import is_word_term

        if is_word_term(term):
            return "word"
        return "broad" if self.share[concept_latent(term)] >= BROAD_SHARE else "specific"


def reading_order(shared: Sequence, kinds: TermKinds) -> list:
    """Shared terms (anything with ``.concept`` and ``.contribution``) as a person reads evidence: words, then
    specific concepts, then broad ones, each by contribution, largest first."""
    return sorted(shared, key=lambda c: (KINDS.index(kinds.kind(c.concept)), -c.contribution, c.concept))


def score_parts(shared: Sequence, kinds: TermKinds) -> dict[str, int]:
    """{"word", "specific", "broad"}: how much of the score each kind of term carries (they sum to the score)."""
    parts = dict.fromkeys(KINDS, 0)
    for c in shared:
        parts[kinds.kind(c.concept)] += c.contribution
    return parts


def explain(searcher, query: str, docid: str, catalogue: Mapping[str, ConceptEntry] | None = None,
            top: int = 10, remove_docid: str | None = None) -> dict:
    """{"score", "rank", "shared": [...], "parts", "query_concepts": [...], "doc_concepts": [...]} for one match.

    ``shared`` holds every shared term with its ``kind`` (word, specific or broad) in reading order
    (`reading_order`); ``parts`` is what each kind carries of the score (`score_parts`).

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
    kinds = TermKinds.for_searcher(searcher, catalogue)
    shared = reading_order(searcher.shared_concepts(vector, docid), kinds)
    found = next(((rank, float(h.score)) for rank, h in enumerate(hits, 1) if h.docid == docid), None)
    doc_vector = sorted(searcher.doc_vector(docid).items(), key=lambda item: (-item[1], item[0]))
    query_vector = sorted(searcher.searchable(vector).items(), key=lambda item: (-item[1], item[0]))
    return {
        "query": query, "docid": docid,
        "score": found[1] if found else float(sum(c.contribution for c in shared)),
        "rank": found[0] if found else None,
        "shared": [{"concept": c.concept, "kind": kinds.kind(c.concept), "query_weight": c.query_weight,
                    "doc_weight": c.doc_weight, "contribution": c.contribution,
                    "description": _described(c.concept, catalogue)} for c in shared],
        "parts": score_parts(shared, kinds),
        "query_concepts": [{"concept": t, "weight": w, "description": _described(t, catalogue)}
                           for t, w in query_vector[:top]],
        "doc_concepts": [{"concept": t, "weight": w, "description": _described(t, catalogue)}
                         for t, w in doc_vector[:top]],
    }


def format_explanation(explanation: dict, shared_rows: int = 15) -> str:
    """The explanation as a readable table: words, then specific concepts (``shared_rows`` rows in all), then the
    broad concepts on one line with their total, then each kind's share of the score."""
    rank = explanation["rank"]
    query = explanation["query"]
    if len(query) > QUERY_ECHO_CHARS:
        query = f"{query[:QUERY_ECHO_CHARS].rstrip()}... ({len(explanation['query']):,} characters)"
    lines = [f"query: {query}",
             f"document {explanation['docid']}: score {explanation['score']:.0f}"
             + (f" (rank {rank})" if rank else f" (not in the top {EXPLAIN_DEPTH})"), "",
             f"{'term':<8} {'query':>5} {'doc':>5} {'contrib':>8} {'share':>6}  description"]
    total = sum(c["contribution"] for c in explanation["shared"]) or 1
    shown = [c for c in explanation["shared"] if c.get("kind") != "broad"]
    broad = [c for c in explanation["shared"] if c.get("kind") == "broad"]
    for c in shown[:shared_rows]:
        term = c["concept"][2:] if c.get("kind") == "word" else c["concept"]  # a word as itself
        lines.append(f"{term:<8} {c['query_weight']:>5} {c['doc_weight']:>5} {c['contribution']:>8} "
                     f"{c['contribution'] / total:>6.1%}  {c['description'] if c.get('kind') != 'word' else '(word)'}")
    if len(shown) > shared_rows:
        rest = shown[shared_rows:]
        lines.append(f"... {len(rest)} more words and specific concepts, {sum(c['contribution'] for c in rest)} in all")
    if broad:
        carried = sum(c["contribution"] for c in broad)
        names = "; ".join(f"{c['concept']} {c['description']}".strip() for c in broad[:3])
        lines.append(f"{'broad':<8} {'':>5} {'':>5} {carried:>8} {carried / total:>6.1%}  {len(broad)} broad "
                     f"concept{'s' * (len(broad) != 1)} (each on ≥{BROAD_SHARE:.0%} of passages): {names}"
                     + (" ..." if len(broad) > 3 else ""))
    lines.append(f"{'sum':<8} {'':>5} {'':>5} {sum(c['contribution'] for c in explanation['shared']):>8}")
    parts = explanation.get("parts")
    if parts:
        lines.append("carried by: " + ", ".join(f"{name}s {value / total:.1%}" for name, value in parts.items()))
    for title, key in (("query's top terms", "query_concepts"), ("document's top terms", "doc_concepts")):
        lines += ["", title + ":"]
        lines += [f"  {c['concept']:<8} {c['weight']:>4}  {c['description']}" for c in explanation[key]]
    return "\n".join(lines)
