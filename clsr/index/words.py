"""Words beside concepts: each passage's analysed words as impact terms carrying quantised BM25 weights.

BM25 is a sum over the query's words of a weight that depends only on the word and the passage, so it can be
computed once per (word, passage) and stored as an integer impact, as Anserini's quantised-BM25 and uniCOIL
indexes store theirs. Lucene's ``BM25Similarity`` (Lucene 8 and later, which dropped the constant k1 + 1):

    w(t, d) = idf(t) · tf / (tf + k1 · (1 − b + b · |d| / avgdl)),    idf(t) = ln(1 + (N − df + 0.5) / (df + 0.5))

with Pyserini's k1 = 0.9, b = 0.4 (`clsr.index.lucene.BM25_K1`, `BM25_B`), |d| the passage's analysed length
as Lucene stores it (its norm is one byte, :func:`lucene_length`) and avgdl the mean exact length. A query scores
Σ_t qtf(t) · w(t, d), qtf being how often the word occurs in the query: Anserini's bag-of-words query boosts each
distinct word by its count. The weights are quantised as concept activations are (`clsr.index.concepts.Quantizer`,
8 bits), with the largest weight of the corpus mapped to the top impact, so that no rare word is clipped.

Words are analysed by Pyserini's default English analyzer (Porter stems, Lucene's English stopwords), the analyzer
of `clsr index --kind bm25` and of Pyserini's own BM25 indexes. In an index a word's term is :data:`WORD_PREFIX`
and its stem, so that no word is a concept term: "C3" in a biomedical passage analyses to ``c3``, which is
concept 3's term.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clsr.index.concepts import Quantizer
from clsr.index.manifest import WordsRecord

WORD_PREFIX = "w:"  # the analyser never emits ":" inside a token, so w:c3 is a word and c3 a concept
DOC_WORDS_DIR = "doc_words"
VOCABULARY = "vocabulary.txt"
ANALYZER = "Pyserini's default English analyzer (Porter stemmer, Lucene's English stopwords)"


def word_term(stem: str) -> str:
    return WORD_PREFIX + stem


def is_word_term(term: str) -> bool:
    return term.startswith(WORD_PREFIX)


def word_of(term: str) -> str:
    """The analysed word a word term stands for (``w:vitamin`` -> ``vitamin``)."""
    return term[len(WORD_PREFIX):]


@functools.cache
def _analyzer():
    from clsr.jvm import pyserini_lucene

    pyserini_lucene()
    from pyserini.analysis import Analyzer, get_lucene_analyzer

    return Analyzer(get_lucene_analyzer())


def analyze(text: str) -> list[str]:
    """The analysed tokens of ``text``, in order (Pyserini's default English analyzer; repeats kept)."""
    return list(_analyzer().analyze(text)) if text.strip() else []


@functools.cache
def lucene_length(length: int) -> int:
    """A document length as Lucene's BM25 reads it back from its one-byte norm (``SmallFloat.intToByte4`` then
    ``byte4ToInt``: exact below 24, then rounded down to about 1 part in 16), so that word weights rank as
    `clsr index --kind bm25` does."""
    from clsr.jvm import java_class

    small_float = java_class("org.apache.lucene.util.SmallFloat")
    return int(small_float.byte4ToInt(small_float.intToByte4(int(length))))


class DocWords(NamedTuple):
    """Every passage's words as impacts, in compressed-row form: passage ``i``'s word ids are
    ``words[indptr[i]:indptr[i + 1]]`` (indices into ``vocabulary``) with ``impacts`` alongside (1..255)."""

    vocabulary: list[str]
    indptr: np.ndarray  # (n + 1,) int64
    words: np.ndarray  # (postings,) uint16 or uint32
    impacts: np.ndarray  # (postings,) uint8 (or wider for more bits)

    def vector(self, row: int) -> dict[str, int]:
        """Passage ``row``'s {word term: impact}."""
        start, end = self.indptr[row], self.indptr[row + 1]
        return {word_term(self.vocabulary[w]): int(i) for w, i in zip(self.words[start:end].tolist(),
                                                                      self.impacts[start:end].tolist())}


class WordWeights(NamedTuple):
    """Every (word, passage)'s BM25 weight before quantisation, in the compressed-row form of :class:`DocWords`."""

    vocabulary: list[str]
    indptr: np.ndarray  # (n + 1,) int64
    words: np.ndarray  # (postings,) uint32
    weights: np.ndarray  # (postings,) float64
    avgdl: float


def word_weights(token_lists: Iterable[Sequence[str]], k1: float, b: float) -> WordWeights:
    """The BM25 weight of every (word, passage) of a corpus, from each passage's analysed tokens (:func:`analyze`),
    by the formula of the module docstring: a query's Σ count · weight is Lucene's BM25 score (to float32
    rounding). Raises ValueError for an empty corpus."""
    counts = [Counter(tokens) for tokens in token_lists]
    if not counts:
        raise ValueError("no passages to weigh words in")
    lengths = np.array([sum(c.values()) for c in counts], np.float64)
    n, avgdl = len(counts), float(lengths.mean()) if len(lengths) else 0.0
    document_frequency: Counter = Counter()
    for c in counts:
        document_frequency.update(c.keys())
    vocabulary = sorted(document_frequency)
    index = {word: i for i, word in enumerate(vocabulary)}
    idf = np.array([math.log(1 + (n - document_frequency[w] + 0.5) / (document_frequency[w] + 0.5))
                    for w in vocabulary])
    indptr = np.zeros(n + 1, np.int64)
    indptr[1:] = np.cumsum([len(c) for c in counts])
    words = np.empty(indptr[-1], np.uint32)
    weights = np.empty(indptr[-1], np.float64)
    for row, c in enumerate(counts):
        start = indptr[row]
        ids = np.fromiter((index[w] for w in c), np.int64, len(c))
        order = np.argsort(ids, kind="stable")
        tf = np.fromiter(c.values(), np.float64, len(c))[order]
        norm = k1 * (1 - b + b * lucene_length(int(lengths[row])) / max(avgdl, 1e-9))
        words[start:start + len(c)] = ids[order]
        weights[start:start + len(c)] = idf[ids[order]] * tf / (tf + norm)
    return WordWeights(vocabulary, indptr, words, weights, avgdl)


def word_impacts(token_lists: Iterable[Sequence[str]], k1: float, b: float, bits: int = 8
                 ) -> tuple[DocWords, WordsRecord]:
    """The quantised BM25 weight of every (word, passage) of a corpus (:func:`word_weights`), the largest weight
    mapped to the top impact so no rare word is clipped, and the manifest's record of how they were made (its
    ``bytes`` are filled in once ``doc_words/`` is written). Raises ValueError for an empty corpus."""
    weighed = word_weights(token_lists, k1, b)
    weights = weighed.weights
    quantizer = Quantizer.fit(weights, bits=bits, percentile=100) if len(weights) else Quantizer(scale=1.0)
    impacts = quantizer.quantize(weights).astype(np.uint8 if bits <= 8 else np.uint16)
    record = WordsRecord(documents=len(weighed.indptr) - 1, avgdl=round(weighed.avgdl, 6), k1=k1, b=b,
                         quantizer=quantizer.to_dict(), vocabulary=len(weighed.vocabulary),
                         postings=int(weighed.indptr[-1]), analyzer=ANALYZER)
    return DocWords(weighed.vocabulary, weighed.indptr, weighed.words, impacts), record


def corpus_words(texts: Sequence[str], k1: float, b: float, max_length: int, bits: int = 8, progress: bool = True
                 ) -> tuple[DocWords, WordsRecord]:
    """:func:`word_impacts` of passages' texts, each analysed (:func:`analyze`) after being cut where an encoder of
    ``max_length`` tokens cuts passages (`clsr.encode.dense.cut_texts`: 25,600 characters at 256 tokens), so that
    a 20 MB passage costs what a normal one does; about 1 ms a passage on a 2-core machine."""
    from clsr.encode.dense import CHARS_PER_TOKEN_BOUND
    from clsr.progress import progress_bar

    limit = max_length * CHARS_PER_TOKEN_BOUND
    tokens = [analyze(text[:limit]) for text in progress_bar(texts, desc="analysing words", unit="passage",
                                                              enabled=progress)]
    return word_impacts(tokens, k1, b, bits)


def query_words(text: str, vocabulary: Mapping[str, int] | None = None) -> dict[str, int]:
    """A query's {word term: count} (Anserini's bag-of-words boosts), its words in ``vocabulary`` only if given."""
    counts = Counter(analyze(text))
    return {word_term(w): c for w, c in counts.items() if vocabulary is None or w in vocabulary}


def write_doc_words(directory: str | os.PathLike, doc_words: DocWords) -> None:
    """``doc_words/``: vocabulary.txt (a word a line; its line number is its id), indptr.npy (int64), words.npy (uint16,
    or uint32 past 65,536 words), impacts.npy (uint8)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / VOCABULARY).write_text("\n".join(doc_words.vocabulary), encoding="utf-8")
    np.save(folder / "indptr.npy", doc_words.indptr)
    # Word ids in 2 bytes while the vocabulary allows (SciFact's has 27k words): 3 bytes a posting with its impact.
    narrow = np.uint16 if len(doc_words.vocabulary) <= 2**16 else np.uint32
    np.save(folder / "words.npy", np.asarray(doc_words.words).astype(narrow))
    np.save(folder / "impacts.npy", doc_words.impacts)


def read_doc_words(directory: str | os.PathLike) -> DocWords:
    """What :func:`write_doc_words` wrote (arrays memory-mapped)."""
    folder = Path(directory)
    vocabulary = (folder / VOCABULARY).read_text(encoding="utf-8").split("\n")
    return DocWords(vocabulary, np.load(folder / "indptr.npy"), np.load(folder / "words.npy", mmap_mode="r"),
                    np.load(folder / "impacts.npy", mmap_mode="r"))
