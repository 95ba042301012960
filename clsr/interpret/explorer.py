"""The concept explorer's logic, free of any web framework: search with exact concept bars, steering,
word evidence, concept pages and side-by-side comparison. ``clsr.interpret.serve`` puts it on HTTP.

Every answer is a plain dict (JSON-ready). Bad input raises :class:`ExplorerError` with the HTTP
status it deserves (400 for a malformed request, 404 for an unknown concept or document) and a
one-line message, so the server can answer it and carry on.
"""

from __future__ import annotations

import functools
import os
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from clsr.index.words import WORD_PREFIX

MAX_K = 100  # hits per request: a page shows tens, and each hit carries its concept bars
MAX_QUERY_CHARS = 2000
MOVED_DEPTH = 100  # how deep the unsteered ranking is searched to tell how far a steered hit moved
# The factors a steering slider offers and the API accepts (/api/info gives them to the page): 0 suppresses a
# concept, 1 leaves it, above 1 boosts it. 3 is where the page's sliders always ended (in steps of 0.25); the API
# once took up to 10, which a slider could not show.
STEER_RANGE = (0.0, 3.0)
EVIDENCE_PASSAGES = 5  # top passages a concept page shows with their evidence
HISTOGRAM_BINS = 20


class ExplorerError(Exception):
    """A request the explorer cannot answer: `status` is the HTTP status (4xx), `message` says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _titles(source: str | None) -> dict[str, str]:
    """BEIR titles by docid when the source is a BEIR folder or corpus file that has them; else {}."""
    from clsr.data import DataError, beir_file, field_text, format_suffix, read_jsonl, record_id, resolve

    if not source:
        return {}
    try:
        where = resolve(source)
        path = beir_file(where, "corpus.jsonl") if isinstance(where, Path) and where.is_dir() else Path(str(where))
    except Exception:  # an ir_datasets id or a vanished path: titles are a nicety, not a need
        return {}
    if format_suffix(path) != ".jsonl" or not path.exists():
        return {}
    try:  # ids and titles read by the corpus reader's rules (the index was built through them)
        return {record_id(row, "document", f"{path}:{n}"):
                field_text(row.get("title"), "title", f"{path}:{n}")[0].strip()
                for n, row in read_jsonl(path) if "_id" in row}
    except DataError:
        return {}


class Explorer:
    """One concept index opened for exploration, optionally with BM25 and dense indexes to compare.

    ``options`` go to :class:`clsr.search.ClsrSearcher` (e.g. ``dtype``). Passages come from `corpus`,
    by default the index manifest's source; descriptions from the catalogue (``concepts.jsonl``).
    """

    def __init__(self, index_dir: str | os.PathLike, *, bm25: str | os.PathLike | None = None,
                 dense: str | os.PathLike | None = None, catalogue: str | os.PathLike | None = None,
                 corpus: str | None = None, alpha: float | None = None, **options):
        from clsr.interpret.describe import index_catalogue, load_catalogue, regions
        from clsr.interpret.evidence import EvidenceExplainer, passage_texts
        from clsr.search import Bm25Searcher, ClsrSearcher, DenseSearcher

        self.index_dir = Path(index_dir)
        self.searcher = ClsrSearcher(index_dir, **options)
        self.manifest = self.searcher.manifest
        self.encoder = self.searcher.concept_encoder
        self.texts = passage_texts(index_dir, corpus)
        self.titles = _titles(corpus or self.manifest.source)
        self.catalogue = load_catalogue(catalogue) if catalogue else index_catalogue(index_dir)
        self.evidence = EvidenceExplainer.for_encoder(self.encoder)
        if alpha is None:
            from clsr.fusion import recorded_alpha

            alpha = recorded_alpha(self.manifest, index_dir)
        self.alpha = alpha
        self.bm25 = Bm25Searcher(bm25) if bm25 else None
        self.dense = None
        if dense:
            from clsr.encode.dense import EncoderConfig
            from clsr.index import read_manifest

            dense_config = EncoderConfig.from_dict(read_manifest(dense).encoder)
            # The concept index's encoder is reused when it is the dense index's (one model in memory).
            shared = self.encoder.dense if dense_config == self.encoder.dense.config else None
            self.dense = DenseSearcher(dense, encoder=shared)

        codes = self.searcher.doc_codes
        self.n_latents = int(self.manifest.sae.n_latents)
        latents, activations = np.asarray(codes.latents, np.int64), np.asarray(codes.activations, np.float32)
        fired = activations > 0
        rows = np.nonzero(fired)[0]
        flat_latents, flat_values = latents[fired], activations[fired]
        order = np.lexsort((-flat_values, flat_latents))  # by concept, strongest first
        self._rows, self._values = rows[order], flat_values[order]
        self._starts = np.searchsorted(flat_latents[order], np.arange(self.n_latents + 1))
        self.df = np.diff(self._starts)
        self.rank, self.region = regions(self.df)
        from clsr.interpret.explain import TermKinds

        self.kinds = TermKinds(self.df, self.manifest.documents)

    # -- helpers ------------------------------------------------------------------------------

    def describe(self, term: str) -> str:
        entry = self.catalogue.get(term)
        return entry.description if entry is not None else ""

    def latent(self, term: str) -> int:
        """The latent of a concept term, or ExplorerError 400 (malformed) / 404 (not in this SAE)."""
        from clsr.index.concepts import concept_latent

        try:
            latent = concept_latent(str(term).strip())
        except ValueError as e:
            raise ExplorerError(400, str(e)) from None
        if latent >= self.n_latents:
            raise ExplorerError(404, f"unknown concept {term!r}: this index's SAE has c0..c{self.n_latents - 1}")
        return latent

    def check_docid(self, docid: str) -> str:
        if docid not in self.searcher.doc_codes._rows:
            raise ExplorerError(404, f"unknown document {docid!r}: it is not in this index")
        return docid

    @staticmethod
    def check_query(query: str | None) -> str:
        query = " ".join((query or "").split())
        if not query:
            raise ExplorerError(400, "the query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise ExplorerError(400, f"the query is {len(query)} characters long; at most {MAX_QUERY_CHARS}")
        return query

    @staticmethod
    def check_k(k: int) -> int:
        if not 1 <= k <= MAX_K:
            raise ExplorerError(400, f"k={k}: ask for 1 to {MAX_K} hits")
        return k

    def parse_steering(self, items: Sequence[str]) -> dict[int, float]:
        """``["c12=2", "c7=0"]`` as {latent: factor}; factors within STEER_RANGE."""
        steering = {}
        for item in items:
            for part in str(item).split(","):
                if not part.strip():
                    continue
                term, sep, factor = part.partition("=")
                if not sep:
                    raise ExplorerError(400, f"steer {part!r}: expected c<id>=<factor>, e.g. c12=2")
                try:
                    value = float(factor)
                except ValueError:
                    raise ExplorerError(400, f"steer {part!r}: {factor!r} is not a number") from None
                if not STEER_RANGE[0] <= value <= STEER_RANGE[1]:
                    raise ExplorerError(400, f"steer {part!r}: factors run from {STEER_RANGE[0]:g} (suppress) to "
                                             f"{STEER_RANGE[1]:g}")
                steering[self.latent(term)] = value
        return steering

    @functools.lru_cache(maxsize=256)  # noqa: B019 (one Explorer per server: the cache lives as long as it)
    def _embedding(self, query: str) -> np.ndarray:
        # Cached: moving a slider re-ranks without re-running the transformer.
        return self.encoder.dense.encode_queries([query])

    def query_vector(self, query: str, steering: Mapping[int, float] | None = None) -> dict[str, int]:
        """The query's {term: impact} as Lucene gets it, steered like ``--boost``/``--suppress``; in an index with
        words, its words mixed in as `clsr search` mixes them (`clsr.index.mix`)."""
        from clsr.index.concepts import impact_vectors, steer_codes

        values, latents = steer_codes(*self.encoder.query_codes(self._embedding(query)), dict(steering or {}))
        vector = impact_vectors(values, latents, self.encoder.query_quantizer)[0]
        if self.encoder.words is not None and self.encoder.words_weight:
            vector = self.encoder.mix(vector, values[0], latents[0], query)
        return vector

    def _passage(self, docid: str, snippet_chars: int = 300) -> dict:
        text = self.texts.get(docid, "")
        title = self.titles.get(docid, "")
        body = text[len(title):].strip() if title and text.startswith(title) else text
        return {"docid": docid, "title": title or textwrap.shorten(text, 90, placeholder="..."),
                "snippet": textwrap.shorten(body, snippet_chars, placeholder="...")}

    # -- API ----------------------------------------------------------------------------------

    def info(self) -> dict:
        return {"index": str(self.index_dir), "documents": self.manifest.documents, "doc_k": self.manifest.doc_k,
                "query_k": self.encoder.query_k, "sae": self.manifest.sae.name, "n_latents": self.n_latents,
                "described": bool(self.catalogue), "compare": self.compare_methods(), "max_k": MAX_K,
                "steer_range": list(STEER_RANGE)}

    def search(self, query: str, k: int = 10, steering: Mapping[int, float] | None = None) -> dict:
        """Hits with their shared concepts; each hit's contributions sum exactly to its score.

        With steering, each hit also gets ``previous_rank``: its rank without steering (None when
        below the top ``MOVED_DEPTH``).
        """
        start = time.perf_counter()
        query, k = self.check_query(query), self.check_k(k)
        vector = self.query_vector(query, steering)
        hits = self.searcher.search_vector(vector, k)
        previous = None
        if steering:
            plain = self.searcher.search_vector(self.query_vector(query), max(MOVED_DEPTH, k))
            previous = {hit.docid: rank for rank, hit in enumerate(plain, 1)}
        from clsr.interpret.explain import reading_order, score_parts

        searchable = self.searcher.searchable(vector)
        out = []
        for rank, hit in enumerate(hits, 1):
            shared = reading_order(self.searcher.shared_concepts(vector, hit.docid), self.kinds)
            # Words, then specific concepts, then broad ones (`clsr.interpret.explain`); words are shown as chips
            # of their own, concepts with their descriptions.
            row = {"rank": rank, **self._passage(hit.docid), "score": hit.score,
                   "concepts": [{"concept": c.concept, "kind": self.kinds.kind(c.concept),
                                 "query_weight": c.query_weight, "doc_weight": c.doc_weight,
                                 "contribution": c.contribution, "description": self.describe(c.concept)}
                                for c in shared],
                   "parts": score_parts(shared, self.kinds)}
            if previous is not None:
                row["previous_rank"] = previous.get(hit.docid)
            out.append(row)
        query_terms = sorted(searchable.items(), key=lambda item: (-item[1], item[0]))
        return {"query": query, "k": k,
                "steering": {f"c{latent}": factor for latent, factor in sorted((steering or {}).items())},
                "query_concepts": [{"concept": t, "weight": w, "description": self.describe(t),
                                    "kind": self.kinds.kind(t), "region": str(self.region[int(t[1:])])}
                                   for t, w in query_terms if not t.startswith(WORD_PREFIX)],
                "query_words": [{"word": t[len(WORD_PREFIX):], "weight": w} for t, w in query_terms
                                if t.startswith(WORD_PREFIX)],
                "hits": out, "took_ms": round((time.perf_counter() - start) * 1000, 2)}

    def word_evidence(self, concept: str, query: str | None = None, docid: str | None = None,
                      method: str = "pooling") -> dict:
        """Every word of the query and/or the passage scored for one concept (the page highlights them)."""
        from clsr.interpret.evidence import match_evidence

        latent = self.latent(concept)
        if query is None and docid is None:
            raise ExplorerError(400, "give a query (q), a document (docid) or both")
        if method not in ("pooling", "occlusion"):
            raise ExplorerError(400, f"method must be pooling or occlusion, not {method!r}")
        query = self.check_query(query) if query is not None else None
        document = self.texts.get(self.check_docid(docid), "") if docid is not None else None
        item, = match_evidence(self.evidence, [f"c{latent}"], query=query, document=document, method=method, top=None)
        return {**item, "description": self.describe(item["concept"]), "query_text": query, "docid": docid,
                "document_text": document}

    @functools.lru_cache(maxsize=128)  # noqa: B019 (one Explorer per server: the cache lives as long as it)
    def concept(self, term: str) -> dict:
        """A concept's page: description, df, region, activation histogram and top passages with evidence."""
        latent = self.latent(term)
        term = f"c{latent}"
        start, end = self._starts[latent], self._starts[latent + 1]
        values = self._values[start:end]
        counts, edges = np.histogram(values, bins=HISTOGRAM_BINS) if len(values) else (np.zeros(0), np.zeros(0))
        passages = []
        for row, value in zip(self._rows[start:start + EVIDENCE_PASSAGES], values[:EVIDENCE_PASSAGES]):
            docid = self.searcher.doc_codes.ids[row]
            text = self.texts.get(docid, "")
            evidence, = self.evidence.explain(text, [latent], method="pooling")
            passages.append({**self._passage(docid), "activation": round(float(value), 5), "text": text,
                             "words": [{"word": w.word, "start": w.start, "end": w.end, "score": round(w.score, 6)}
                                       for w in evidence.words]})
        entry = self.catalogue.get(term)
        return {"concept": term, "latent": latent, "description": self.describe(term),
                "df": int(self.df[latent]), "df_share": round(float(self.df[latent]) / max(len(self.texts), 1), 4),
                "rank": int(self.rank[latent]), "region": str(self.region[latent]),
                "mean_activation": round(float(values.mean()), 5) if len(values) else 0.0,
                "max_activation": round(float(values.max()), 5) if len(values) else 0.0,
                "histogram": {"edges": [round(float(e), 5) for e in edges], "counts": [int(c) for c in counts]},
                "top_passages": passages, "label": getattr(entry, "label", None),
                "inherited": bool(getattr(entry, "inherited", False)),
                "described_with": getattr(entry, "described_with", None)}

    def document(self, docid: str, top: int = 20) -> dict:
        from clsr.index.concepts import concept_term

        activations, latents = self.searcher.doc_codes.code(self.check_docid(docid))
        impacts = self.encoder.doc_quantizer.quantize(activations)
        concepts = [{"concept": concept_term(int(l)), "activation": round(float(a), 5), "weight": int(i),
                     "description": self.describe(concept_term(int(l)))}
                    for l, a, i in zip(latents, activations, impacts) if a > 0][:top]
        return {**self._passage(docid), "text": self.texts.get(docid, ""), "concepts": concepts}

    def match_concepts(self, words: str, limit: int = 5) -> dict:
        """Concepts whose descriptions share the most words with `words` (to add one to the steering)."""
        from clsr.interpret.describe import pick_concepts

        if not words.strip():
            raise ExplorerError(400, "give some description words, e.g. 'bone, fracture'")
        if not self.catalogue:
            raise ExplorerError(404, "this index has no descriptions; run `clsr describe --index "
                                     f"{self.index_dir}` first")
        picked = pick_concepts(self.catalogue, words, limit=limit)
        return {"words": words, "concepts": [
            {"concept": term, "matched": matched, "description": self.describe(term), "df": int(self.df[int(term[1:])]),
             "region": str(self.region[int(term[1:])])} for term, matched in picked]}

    def compare_methods(self) -> list[str]:
        return ["CL-SR", "hybrid"] + (["BM25"] if self.bm25 else []) + (["dense"] if self.dense else [])

    def compare(self, query: str, k: int = 10) -> dict:
        """The same query through CL-SR, the hybrid (CL-SR + dense scores of reconstructions) and, when
        given, BM25 and dense: {method: [{"rank", "docid", "title", "score"}]}."""
        from clsr.evaluate import trec_eval_order
        from clsr.fusion import fuse

        query, k = self.check_query(query), self.check_k(k)
        vector = self.query_vector(query)
        sparse = self.searcher.search_vector(vector, MOVED_DEPTH)
        runs = {"CL-SR": [(h.docid, h.score) for h in sparse[:k]]}
        docids = [h.docid for h in sparse]
        dense_scores = self.searcher.reconstruction_scores(docids, self._embedding(query)[0]) if docids else []
        reranked = trec_eval_order(zip([h.docid for h in sparse], map(float, dense_scores)))
        fused = fuse([{"q": [(h.docid, h.score) for h in sparse]}, {"q": reranked}], "interpolation", self.alpha,
                     "minmax", k=k)
        runs["hybrid"] = fused.get("q", [])
        if self.bm25:
            runs["BM25"] = [(h.docid, h.score) for h in self.bm25.search(query, k)]
        if self.dense:
            runs["dense"] = [(h.docid, h.score) for h in self.dense.search_vectors(self._embedding(query), k)[0]]
        return {"query": query, "k": k, "alpha": self.alpha, "methods": {
            name: [{"rank": r, **self._passage(docid, 160), "score": round(float(score), 5)}
                   for r, (docid, score) in enumerate(run, 1)] for name, run in runs.items()}}
