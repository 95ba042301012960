"""One query for words and concepts: a query's concept weights and word counts mixed into one integer impact vector,
so that one Lucene search of a words-and-concepts index scores

    S(q, d) = S_c(q, d) / N_c(q) + W · S_w(q, d) / N_w(q)

S_c is the concept part (the integer dot product of concept impacts), S_w the word part (the query's word counts
times the passage's quantised BM25 impacts, `clsr.index.words`) and W the words' weight (``--words-weight``; 0 gives
the concept query alone). The two parts' scales differ by orders of magnitude and from query to query, so each is
divided by a normaliser computed from the query alone, in one pass:

* ``self`` (the default): each part's score for a perfect match, the query taken as a passage: its own concept
  activations through the documents' quantiser, and its own words weighed by BM25 as a passage of its length.
  Each part then scores a passage as a fraction of what the query would give itself.
* ``bound``: each part's upper bound, Σ_i q_i · max_d impact(i, d), from the index's per-term maxima.

Both were measured against the two-pass rule (each part over its top score for the query) on tuning splits
(SciFact train, NFCorpus dev, the MS MARCO subset's DL19) and reported on test splits:
benchmarks/results/mix-rule.md, docs/concept-index.md ("Words and concepts").

The mixed weights are integers, as Lucene's impact queries take them, scaled so that the largest is at most
:data:`MAX_QUERY_WEIGHT` and the largest score any passage could get stays below 2**24, where Lucene's float32
sums stop holding integers exactly: every hit's score is then the exact integer sum of its words' and concepts'
contributions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clsr.index.concepts import FLOAT32_EXACT_LIMIT, Quantizer, concept_latent
from clsr.index.manifest import WordsRecord
from clsr.index.words import DOC_WORDS_DIR, analyze, lucene_length, read_doc_words, word_term

NORMALIZATIONS = ("self", "bound")
DEFAULT_NORMALIZATION = "self"
DEFAULT_WORDS_WEIGHT = 0.4  # chosen on the tuning splits: benchmarks/results/mix-rule.md
MAX_QUERY_WEIGHT = 4095  # 12 bits: a word's weight keeps 3-4 significant digits beside 8-bit concept weights


@dataclass
class WordSide:
    """What a query needs of an index's words: the vocabulary ({word: id}), each word's idf and largest impact in
    the index, and how the impacts were made (the manifest's ``words`` record)."""

    words: list[str]  # by id
    vocabulary: dict[str, int]  # word -> id
    idf: np.ndarray  # (V,) float64
    max_impact: np.ndarray  # (V,) int64
    record: WordsRecord

    @classmethod
    def load(cls, index_dir: str | os.PathLike, record: WordsRecord) -> WordSide:
        """From ``doc_words/`` of the index (one pass over its postings, ~0.1 s per million)."""
        doc_words = read_doc_words(Path(index_dir) / DOC_WORDS_DIR)
        words = np.asarray(doc_words.words, np.int64)
        size = len(doc_words.vocabulary)
        df = np.bincount(words, minlength=size)
        max_impact = np.zeros(size, np.int64)
        np.maximum.at(max_impact, words, np.asarray(doc_words.impacts, np.int64))
        idf = np.log(1 + (record.documents - df + 0.5) / (df + 0.5))
        vocabulary = list(doc_words.vocabulary)
        return cls(vocabulary, {word: i for i, word in enumerate(vocabulary)}, idf, max_impact, record)

    def counts(self, text: str) -> tuple[dict[int, int], int]:
        """({word id: count} of the query's analysed words that the index holds, how many tokens it analysed to)."""
        counts: dict[int, int] = {}
        tokens = analyze(text)
        for token in tokens:
            word = self.vocabulary.get(token)
            if word is not None:
                counts[word] = counts.get(word, 0) + 1
        return counts, len(tokens)

    def vector(self, counts: Mapping[int, int]) -> dict[str, int]:
        """{w:stem: count}: the word part of a query, as terms."""
        return {word_term(self.words[w]): c for w, c in counts.items()}

    def self_score(self, counts: Mapping[int, int], length: int) -> float:
        """The word part's score of the query taken as a passage of ``length`` analysed tokens (its own BM25
        weights, quantised as the passages' are)."""
        record = self.record
        norm = record.k1 * (1 - record.b + record.b * lucene_length(length) / max(record.avgdl, 1e-9))
        quantizer = Quantizer.from_dict(record.quantizer)
        weights = np.array([self.idf[w] * c / (c + norm) for w, c in counts.items()])
        impacts = quantizer.quantize(weights) if len(weights) else np.zeros(0, np.int64)
        return float(sum(c * int(i) for c, i in zip(counts.values(), impacts)))

    def bound(self, counts: Mapping[int, int]) -> float:
        """The word part's upper bound: Σ count · the word's largest impact in the index."""
        return float(sum(c * int(self.max_impact[w]) for w, c in counts.items()))

    def mix(self, concepts: Mapping[str, int], activations: Mapping[str, float], text: str, words_weight: float,
            normalization: str, doc_quantizer: Quantizer, concept_max_impact: np.ndarray | None) -> dict[str, int]:
        """One query's concept vector ``concepts`` ({c123: weight}, from the code ``activations`` {c123: float})
        mixed with the words of its ``text`` into one integer query (:func:`mixed_query`), each part normalised by
        ``normalization``: "self" (the query's own score as a passage) or "bound" (its largest possible score,
        from ``concept_max_impact`` by latent id)."""
        counts, length = self.counts(text)
        if normalization == "bound":
            concept_norm, word_norm = concept_bound(concepts, concept_max_impact), self.bound(counts)
        else:
            concept_norm = concept_self_score(concepts, activations, doc_quantizer)
            word_norm = self.self_score(counts, length)
        return mixed_query(concepts, concept_norm, self.vector(counts), word_norm, words_weight)


def concept_self_score(vector: Mapping[str, int], activations: Mapping[str, float], doc_quantizer: Quantizer) -> float:
    """The concept part's score of the query taken as a passage: Σ_c q_c · (its activation through the documents'
    quantiser)."""
    terms = [t for t in vector if t in activations]
    if not terms:
        return 0.0
    impacts = doc_quantizer.quantize(np.array([activations[t] for t in terms], np.float64))
    return float(sum(vector[t] * int(i) for t, i in zip(terms, impacts)))


def concept_bound(vector: Mapping[str, int], max_impact: Mapping[str, int] | np.ndarray) -> float:
    """The concept part's upper bound: Σ_c q_c · the concept's largest impact in the index (``max_impact`` by
    latent id)."""
    return float(sum(weight * int(max_impact[concept_latent(term)]) for term, weight in vector.items()))


def mixed_query(concepts: Mapping[str, int], concept_norm: float, words: Mapping[str, int], word_norm: float,
                words_weight: float, doc_max_impact: int = 255) -> dict[str, int]:
    """The one integer query of S = S_c / N_c + W · S_w / N_w: ``concepts`` ({c123: weight}) and ``words``
    ({w:stem: count}) with their normalisers ``concept_norm`` and ``word_norm`` (a part with norm 0 matched nothing
    and is left out) and W = ``words_weight``. With W = 0 the concept query comes back unchanged, so it scores
    exactly as a concept-only index does. ``doc_max_impact`` bounds every passage's impact (8 bits: 255), which
    bounds the largest score (kept below 2**24, see the module docstring)."""
    if words_weight == 0 or not words or word_norm <= 0:
        return dict(concepts)
    raw = {term: weight / concept_norm for term, weight in concepts.items()} if concept_norm > 0 else {}
    raw.update({term: words_weight * count / word_norm for term, count in words.items()})
    largest, total = max(raw.values()), sum(raw.values())
    scale = min(MAX_QUERY_WEIGHT / largest, (FLOAT32_EXACT_LIMIT - 1) / (doc_max_impact * total))
    mixed = {term: max(1, math.floor(value * scale + 0.5)) for term, value in raw.items()}
    while sum(mixed.values()) * doc_max_impact >= FLOAT32_EXACT_LIMIT:  # the rounding up of many tiny weights
        scale *= 0.99
        mixed = {term: max(1, math.floor(value * scale + 0.5)) for term, value in raw.items()}
    return mixed

