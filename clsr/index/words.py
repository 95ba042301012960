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
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clsr.index.concepts import Quantizer
from clsr.index.manifest import WordsRecord
from clsr.index.streaming import CHUNK_ROWS, row_chunks

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


class _Counted(NamedTuple):
    """A corpus's words counted in one pass (:func:`_count_words`): what every weight is computed from."""

    vocabulary: list[str]  # sorted
    indptr: np.ndarray  # (n + 1,) int64
    words: np.ndarray  # (postings,) uint32, ascending within each passage
    counts: np.ndarray  # (postings,) uint32: how often the word occurs in the passage
    norms: np.ndarray  # (n,) float64: k1 · (1 − b + b · |d| / avgdl) of each passage
    idf: np.ndarray  # (vocabulary,) float64
    avgdl: float


def _count_words(token_lists: Iterable[Sequence[str]], k1: float, b: float,
                 chunk_rows: int = CHUNK_ROWS) -> _Counted:
    """Every passage's distinct words and their counts, from one pass over ``token_lists`` (which may be a
    generator: no passage's tokens are kept), as compact arrays: 8 bytes a (word, passage) while counting, then the
    word ids in place of the first-seen ones. Raises ValueError for an empty corpus."""
    index: dict[str, int] = {}  # word -> id in order of first sight; sorted ids replace them at the end
    frequencies = array("q")  # document frequency per first-sight id
    first_sight, counts, sizes, lengths = array("I"), array("I"), array("q"), array("q")
    for tokens in token_lists:
        counted = Counter(tokens)
        for word, count in counted.items():
            word_id = index.get(word)
            if word_id is None:
                word_id = index[word] = len(index)
                frequencies.append(0)
            frequencies[word_id] += 1
            first_sight.append(word_id)
            counts.append(count)
        sizes.append(len(counted))
        lengths.append(sum(counted.values()))
    if not sizes:
        raise ValueError("no passages to weigh words in")
    n = len(sizes)
    vocabulary = sorted(index)
    sorted_id = np.empty(len(vocabulary), np.int64)  # first-sight id -> id in the sorted vocabulary
    sorted_id[np.fromiter((index[w] for w in vocabulary), np.int64, len(vocabulary))] = np.arange(len(vocabulary))
    del index
    document_frequency = np.frombuffer(frequencies, np.int64)[np.argsort(sorted_id)].tolist()
    idf = np.array([math.log(1 + (n - df + 0.5) / (df + 0.5)) for df in document_frequency])
    indptr = np.zeros(n + 1, np.int64)
    indptr[1:] = np.cumsum(np.frombuffer(sizes, np.int64))
    # Views of the arrays' own buffers, not copies (the arrays live on as their bases, no longer growable).
    words, counts_ = np.frombuffer(first_sight, np.uint32), np.frombuffer(counts, np.uint32)
    _sort_within_rows(indptr, words, counts_, sorted_id, chunk_rows)
    lengths_ = np.frombuffer(lengths, np.int64).astype(np.float64)
    avgdl = float(lengths_.mean())
    norms = np.array([k1 * (1 - b + b * lucene_length(int(length)) / max(avgdl, 1e-9)) for length in lengths_])
    return _Counted(vocabulary, indptr, words, counts_, norms, idf, avgdl)


def _sort_within_rows(indptr: np.ndarray, words: np.ndarray, counts: np.ndarray, sorted_id: np.ndarray,
                      chunk_rows: int) -> None:
    """In place: first-sight word ids replaced by sorted ones, and each passage's (word, count) pairs put in
    ascending word order; a chunk of passages at a time, so that the sort's keys are a chunk's, not the corpus's."""
    for start, stop in row_chunks(len(indptr) - 1, chunk_rows):
        first, last = int(indptr[start]), int(indptr[stop])
        ids = sorted_id[words[first:last]]
        rows = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(indptr[start:stop + 1]))
        order = np.lexsort((ids, rows))  # by passage, then word: a word occurs once in a passage
        words[first:last] = ids[order]
        counts[first:last] = counts[first:last][order]


def _weights(counted: _Counted, first: int, last: int) -> np.ndarray:
    """(last − first,) float64: the BM25 weights of postings ``first:last``, each idf · tf / (tf + norm), in the
    order of operations of the module docstring's formula."""
    rows = np.searchsorted(counted.indptr, np.arange(first, last), side="right") - 1
    tf = counted.counts[first:last].astype(np.float64)
    return counted.idf[counted.words[first:last]] * tf / (tf + counted.norms[rows])


def word_weights(token_lists: Iterable[Sequence[str]], k1: float, b: float) -> WordWeights:
    """The BM25 weight of every (word, passage) of a corpus, from each passage's analysed tokens (:func:`analyze`),
    by the formula of the module docstring: a query's Σ count · weight is Lucene's BM25 score (to float32
    rounding). Raises ValueError for an empty corpus."""
    counted = _count_words(token_lists, k1, b)
    weights = _weights(counted, 0, int(counted.indptr[-1]))
    return WordWeights(counted.vocabulary, counted.indptr, counted.words, weights, counted.avgdl)


def word_impacts(token_lists: Iterable[Sequence[str]], k1: float, b: float, bits: int = 8,
                 chunk_rows: int = CHUNK_ROWS) -> tuple[DocWords, WordsRecord]:
    """The quantised BM25 weight of every (word, passage) of a corpus (:func:`word_weights`), the largest weight
    mapped to the top impact so no rare word is clipped, and the manifest's record of how they were made (its
    ``bytes`` are filled in once ``doc_words/`` is written). ``token_lists`` are read once and may be a generator;
    the float64 weights are computed a chunk of ``chunk_rows`` passages at a time, twice (for the largest, then
    for the impacts), never for the whole corpus. Raises ValueError for an empty corpus."""
    counted = _count_words(token_lists, k1, b, chunk_rows)
    n, postings = len(counted.indptr) - 1, int(counted.indptr[-1])
    chunks = [(int(counted.indptr[start]), int(counted.indptr[stop])) for start, stop in row_chunks(n, chunk_rows)]
    largest = max((_weights(counted, first, last).max() for first, last in chunks if last > first), default=None)
    # Fitted on the one largest weight: its 100th percentile is that weight, as it is of all the weights.
    quantizer = (Quantizer.fit(np.array([largest]), bits=bits, percentile=100) if largest is not None
                 else Quantizer(scale=1.0))
    impacts = np.empty(postings, np.uint8 if bits <= 8 else np.uint16)
    for first, last in chunks:
        impacts[first:last] = quantizer.quantize(_weights(counted, first, last))
    record = WordsRecord(documents=n, avgdl=round(counted.avgdl, 6), k1=k1, b=b, quantizer=quantizer.to_dict(),
                         vocabulary=len(counted.vocabulary), postings=postings, analyzer=ANALYZER)
    return DocWords(counted.vocabulary, counted.indptr, counted.words, impacts), record


def corpus_words(texts: Iterable[str], k1: float, b: float, max_length: int, bits: int = 8, progress: bool = True
                 ) -> tuple[DocWords, WordsRecord]:
    """:func:`word_impacts` of passages' texts, each analysed (:func:`analyze`) after being cut where an encoder of
    ``max_length`` tokens cuts passages (`clsr.encode.dense.cut_texts`: 25,600 characters at 256 tokens), so that
    a 20 MB passage costs what a normal one does; about 1 ms a passage on a 2-core machine. ``texts`` are read once,
    in order, and may be a generator (e.g. over `clsr.data.iter_corpus`): only each passage's word ids and counts
    are kept, about 8 bytes a distinct word of a passage while counting, 5 in the result (:class:`DocWords`)."""
    from clsr.encode.dense import CHARS_PER_TOKEN_BOUND
    from clsr.progress import progress_bar

    limit = max_length * CHARS_PER_TOKEN_BOUND
    tokens = (analyze(text[:limit]) for text in progress_bar(texts, desc="analysing words", unit="passage",
                                                              enabled=progress))
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
