"""Other engines for a concept index's impact postings: BMP and Seismic, beside Lucene.

A concept query is unlike a keyword query: it carries 64-128 of 8,192 concepts and each posting list is
long, so Lucene's exhaustive impact scoring touches a large share of the index (docs/concept-index.md,
"Where the time goes"). Two engines from PyPI answer such queries faster:

* **BMP** (`bmp`; Mallia, Suel and Tonellotto, SIGIR 2024): block-max pruning over fixed-size document
  blocks. With ``alpha = beta = 1`` it prunes only blocks that cannot enter the top k; it scores with
  its own quantised query weights, so clsr asks it for ``depth`` candidates and rescores them exactly.
* **Seismic** (`pyseismic-lsr`; Bruch et al., SIGIR 2024): clustered, summarised posting lists, searched
  approximately (``query_cut``, ``heap_factor``); clsr rescores its candidates exactly too.

Both indexes are built from ``doc_codes/`` (the same integer impacts Lucene holds) on first use, into the
index folder's ``engines/<name>/`` where it can be written, else into a cache keyed by the index
(`clsr.index.derived`: atomic, one builder at a time, umask modes, damaged files rebuilt). Every hit's score is the
integer dot product of the query's and the document's impacts, the score Lucene gives, so explanations still sum
to it; an approximate engine can only miss documents, which benchmarks/engines.py measures as recall against
Lucene's exact run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clsr.errors import UsageError
from clsr.index.concepts import Quantizer, concept_latent, concept_term
from clsr.index.doc_codes import DocCodes
from clsr.index.words import DocWords, is_word_term, word_of, word_term

log = logging.getLogger(__name__)

ENGINES = ("lucene", "bmp", "seismic")
ENGINES_DIR = "engines"


@dataclass(frozen=True)
class EngineConfig:
    """How a non-Lucene engine searches. ``depth``: candidates asked of the engine per query before exact
    rescoring, at least the k asked for (0: k). Seismic scores the documents it visits exactly, so more
    candidates than k add cost and no recall; BMP ranks by its own quantised query weights, so a depth
    above k recovers some of what it misorders. BMP: ``block_size`` documents per block, ``alpha``/``beta``
    its block and query-term pruning (1.0 = none). Seismic: its build parameters (``n_postings`` kept per
    concept, ``centroid_fraction``, ``summary_energy``; the Seismic paper's) and search parameters
    (``query_cut`` of the query's concepts scanned, ``heap_factor``): 32 and 0.8 lost no recall against
    Lucene on SciFact or NFCorpus (benchmarks/results/engines.md)."""

    name: str = "lucene"
    depth: int = 0
    block_size: int = 32
    alpha: float = 1.0
    beta: float = 1.0
    n_postings: int = 4000
    centroid_fraction: float = 0.1
    summary_energy: float = 0.4
    query_cut: int = 32
    heap_factor: float = 0.8

    def __post_init__(self):
        if self.name not in ENGINES:
            raise UsageError(f"unknown engine {self.name!r} (expected one of {', '.join(ENGINES)})")


class DocImpacts:
    """Every document's terms as integer impacts, for exact rescoring and for building an engine, in compressed-row
    form: document ``i``'s term ids are ``term_ids[indptr[i]:indptr[i + 1]]``, ascending, with ``impacts``
    alongside. Concept ``c123`` has id 123; in an index with words, word ``w`` of its vocabulary has id
    ``n_latents + w``. Memory-resident: about 12 bytes a posting."""

    def __init__(self, codes: DocCodes, quantizer: Quantizer, n_latents: int, words: DocWords | None = None):
        impacts = quantizer.quantize(np.asarray(codes.activations, np.float32))
        self._set(codes.ids, np.asarray(codes.latents, np.int64), impacts, n_latents, words)

    @classmethod
    def from_arrays(cls, ids: Sequence[str], latents: np.ndarray, impacts: np.ndarray,
                    n_latents: int | None = None) -> DocImpacts:
        """Impacts already quantised: (n, K) latent ids and integer impacts (0 = no posting), n = len(ids).
        For sets with no index folder, such as benchmarks/engines_scale.py's."""
        if len(ids) != len(latents) or np.shape(latents) != np.shape(impacts):
            raise ValueError(f"{len(ids)} ids, latents of shape {np.shape(latents)}, impacts of shape "
                             f"{np.shape(impacts)}: expected (len(ids), K) for both")
        impacts_of = cls.__new__(cls)
        latents = np.asarray(latents, np.int64)
        impacts_of._set(ids, latents, impacts, n_latents or int(latents.max(initial=0)) + 1, None)
        return impacts_of

    def _set(self, ids: Sequence[str], latents: np.ndarray, impacts: np.ndarray, n_latents: int,
             words: DocWords | None) -> None:
        import scipy.sparse

        self.ids = list(ids)
        self.n_latents = n_latents
        self.vocabulary = list(words.vocabulary) if words is not None else []
        self._word_ids = {word: n_latents + i for i, word in enumerate(self.vocabulary)}
        n, k = np.shape(latents)
        matrix = scipy.sparse.csr_matrix((np.asarray(impacts, np.int64).ravel(),
                                          (np.repeat(np.arange(n), k), latents.ravel())),
                                         shape=(n, n_latents + len(self.vocabulary)))
        if words is not None:
            word_matrix = scipy.sparse.csr_matrix(
                (np.asarray(words.impacts, np.int64), np.asarray(words.words, np.int64) + n_latents,
                 np.asarray(words.indptr, np.int64)), shape=matrix.shape)
            matrix = matrix + word_matrix
        matrix.eliminate_zeros()
        matrix.sort_indices()
        self.matrix = matrix
        self.row = {docid: row for row, docid in enumerate(self.ids)}

    @property
    def indptr(self) -> np.ndarray:
        return self.matrix.indptr

    @property
    def term_ids(self) -> np.ndarray:
        return self.matrix.indices

    @property
    def impacts(self) -> np.ndarray:
        return self.matrix.data

    def term_id(self, term: str) -> int | None:
        """A term's id (None for a word the index does not hold)."""
        if is_word_term(term):
            return self._word_ids.get(word_of(term))
        return concept_latent(term)

    def term(self, term_id: int) -> str:
        if term_id < self.n_latents:
            return concept_term(term_id)
        return word_term(self.vocabulary[term_id - self.n_latents])

    def scores(self, rows: np.ndarray, query: Mapping[str, int]) -> np.ndarray:
        """The integer dot products of ``query`` ({term: impact}) with these documents' impacts: Lucene's scores."""
        weights = np.zeros(self.matrix.shape[1], np.int64)
        for term, weight in query.items():
            term_id = self.term_id(term)
            if term_id is not None:
                weights[term_id] = weight
        return np.asarray(self.matrix[rows] @ weights).ravel()


@contextlib.contextmanager
def native_output_silenced(stderr: bool = False) -> Iterator[None]:
    """Drop what native code prints on file descriptor 1 (and 2 if ``stderr``) during the block: Seismic's Rust
    ``println!`` (``Configuration {...}``, ``Saving ...``) would otherwise land in a run written to stdout, and a
    Rust panic prints its message and a backtrace on stderr before pyo3 raises it as an exception, which
    `clsr.index.derived` reports in one line."""
    streams = [1, 2] if stderr else [1]
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in streams]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in streams:
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in zip(streams, saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


class BmpEngine:
    """Block-max pruning (`bmp` from PyPI) over the index's impacts.

    bmp 0.2.8's search loop scores each block before moving to the next and ends without scoring the last block
    in upper-bound order (pisa-engine/BMP, src/search.rs: the loop scores ``current_block`` only when a next one
    exists), and panics when no block can score (``ub_iter.next().unwrap()``). On a 30-passage index (one block)
    that gave 0 hits (field case 25). So the index ends with a padding block (:data:`PAD_TERM`, impact 1) that
    every query also asks for (weight 1 after BMP's ceil): asked for more than 1,000 candidates
    (:data:`MIN_CANDIDATES`), BMP's initial threshold is 0 (it keeps posting lists' 10th, 100th and 1000th scores
    only), every block that shares a term is a candidate with an upper bound of at least 1, and the padding block,
    last with bound 1, is the one left unscored. Candidates are then rescored exactly."""

    PAD_TERM = "clsr_pad"  # no concept term (c<id>) can equal it
    MIN_CANDIDATES = 1001  # above bmp's largest kth_score rank (1000), so its threshold starts at 0

    def __init__(self, index_dir: str | os.PathLike, impacts: DocImpacts, config: EngineConfig):
        try:
            import bmp
        except ImportError:
            raise UsageError("--engine bmp needs the engines extra: pip install 'clsr[engines]'") from None
        from clsr.index.derived import open_derived

        # v3: a padding block after the documents (v2: rescaled impacts).
        name = f"{ENGINES_DIR}/bmp-b{config.block_size}-v3"
        self.searcher = open_derived(index_dir, name, "the BMP engine",
                                     lambda folder: self._build(bmp, folder / "index.bmp", impacts, config),
                                     lambda folder: self._load(bmp, folder / "index.bmp"))
        self.config = config

    @staticmethod
    def _load(bmp, path: Path):
        with native_output_silenced(stderr=True):  # a damaged file panics, printing a backtrace
            return bmp.Searcher(str(path))

    @staticmethod
    def bmp_impacts(impacts: np.ndarray, terms_per_document: int) -> np.ndarray:
        """Document impacts BMP can sum without overflow. BMP scores in 16-bit integers with its query weights
        cut to 1..32 (bmp's ``MAX_TERM_WEIGHT``, checked in pisa-engine/BMP's source): a document sharing
        all its terms (at most ``terms_per_document``) must stay under 65,536, so impacts are rescaled to
        1..65535 // (32 terms). 8-bit impacts overflowed (scores wrapped round), which lost top documents.
        Candidates are rescored exactly, so the coarser scale costs only recall, measured in benchmarks/engines.py."""
        top = max(1, 65535 // (32 * max(1, terms_per_document)))
        peak = max(1, int(impacts.max(initial=0)))
        return np.where(impacts > 0, np.maximum(1, np.rint(impacts * (top / peak))), 0).astype(np.int64)

    @classmethod
    def _build(cls, bmp, path: Path, impacts: DocImpacts, config: EngineConfig) -> None:
        indexer = bmp.Indexer(str(path), bsize=config.block_size, compress_range=False)
        scaled = cls.bmp_impacts(impacts.impacts, int(np.diff(impacts.indptr).max(initial=1)))
        terms = [impacts.term(t) for t in range(impacts.matrix.shape[1])]
        for row, docid in enumerate(impacts.ids):
            start, end = impacts.indptr[row], impacts.indptr[row + 1]
            indexer.add_document(docid, {terms[t]: int(i) for t, i in zip(impacts.term_ids[start:end].tolist(),
                                                                          scaled[start:end].tolist())})
        for number in range(config.block_size):  # ends the last block of documents, then fills one of its own
            indexer.add_document(f"\x00{cls.PAD_TERM}-{number}", {cls.PAD_TERM: 1})
        indexer.finish()

    def candidates(self, query: Mapping[str, int], depth: int) -> list[str]:
        """BMP's best docids by its own quantised ranking, at least ``depth`` (:data:`MIN_CANDIDATES`) where the
        index has them, the padding left out: all are rescored exactly, which costs far less than BMP's misorder
        (on 30 passages, the 10 it ranked first missed Lucene's 10th)."""
        if not query:
            return []
        weights = {term: float(weight) for term, weight in query.items()}
        weights[self.PAD_TERM] = min(weights.values()) * 1e-6  # BMP's ceil makes it 1
        docids, _ = self.searcher.search(weights, k=max(depth, self.MIN_CANDIDATES), alpha=self.config.alpha,
                                         beta=self.config.beta)
        return [docid for docid in docids if not docid.startswith("\x00")]


class SeismicEngine:
    """Seismic (`pyseismic-lsr` from PyPI) over the index's impacts; approximate, rescored exactly."""

    def __init__(self, index_dir: str | os.PathLike, impacts: DocImpacts, config: EngineConfig):
        try:
            import seismic
        except ImportError:
            raise UsageError("--engine seismic needs the engines extra: pip install 'clsr[engines]'") from None
        from clsr.index.derived import open_derived

        def load(folder: Path):
            with native_output_silenced(stderr=True):
                return seismic.SeismicIndex.load(str(folder / "index.seismic"))

        name = f"{ENGINES_DIR}/seismic-p{config.n_postings}-c{config.centroid_fraction}-e{config.summary_energy}"
        self.index = open_derived(index_dir, name, "the Seismic engine",
                                  lambda folder: self._build(seismic, folder, impacts, config), load)
        self.string_type = seismic.get_seismic_string()
        self.config, self.impacts = config, impacts

    @staticmethod
    def _build(seismic, building: Path, impacts: DocImpacts, config: EngineConfig) -> None:
        dataset = seismic.SeismicDataset()
        # Rows hold their term ids ascending and no zero impact (DocImpacts), as Seismic takes them.
        dataset.add_documents_by_id(list(impacts.ids), np.asarray(impacts.term_ids, np.int64),
                                    np.asarray(impacts.impacts, np.float32), np.asarray(impacts.indptr, np.int64))
        with native_output_silenced():
            index = seismic.SeismicIndex.build_from_dataset(
                dataset, n_postings=config.n_postings, centroid_fraction=config.centroid_fraction,
                summary_energy=config.summary_energy, num_threads=1)
            index.save(str(building / "index"))  # writes index.index.seismic
        (building / "index.index.seismic").rename(building / "index.seismic")

    def candidates(self, query: Mapping[str, int], depth: int) -> list[str]:
        ids = {self.impacts.term_id(t): w for t, w in query.items()}
        ids.pop(None, None)  # a word the index does not hold
        if not ids:
            return []
        components = np.asarray([str(t) for t in ids], dtype=self.string_type)
        values = np.asarray(list(ids.values()), np.float32)
        hits = self.index.search("q", components, values, k=depth, query_cut=self.config.query_cut,
                                 heap_factor=self.config.heap_factor)
        return [docid for _, _, docid in hits]


def default_engine() -> str:
    """The engine `clsr search` uses unless told: Seismic where pyseismic-lsr is installed, else Lucene.

    Seismic became the default by issue 23's rule (an approximate engine is the default where its measured loss
    is at most 0.002 nDCG@10): at its defaults it found every one of Lucene's top 10 and top 1000 on SciFact and
    NFCorpus (benchmarks/results/engines.md), and its hits carry Lucene's exact scores."""
    import importlib.util

    return "seismic" if importlib.util.find_spec("seismic") is not None else "lucene"


def open_engine(index_dir: str | os.PathLike, impacts: DocImpacts, config: EngineConfig):
    """The BMP or Seismic engine of a concept index, built on first use."""
    return {"bmp": BmpEngine, "seismic": SeismicEngine}[config.name](index_dir, impacts, config)


def engine_top_k(engine, impacts: DocImpacts, query: Mapping[str, int], k: int) -> list[tuple[str, float]]:
    """The top ``k`` (docid, exact score) of ``engine``'s candidates (``k``, or its config's ``depth`` if larger),
    in the project's one tie order (`clsr.evaluate.trec_eval_order`)."""
    from clsr.evaluate import trec_eval_order

    if not query:
        return []
    candidates = engine.candidates(query, max(k, engine.config.depth))
    return trec_eval_order(exact_scores(impacts, query, candidates))[:k]


def exact_scores(impacts: DocImpacts, query: Mapping[str, int], candidates: Sequence[str]) -> list[tuple[str, float]]:
    """``candidates`` with their exact integer score (the one Lucene gives), those above zero, in no set order."""
    if not candidates:
        return []
    rows = np.fromiter((impacts.row[d] for d in candidates), np.int64, len(candidates))
    scores = impacts.scores(rows, query)
    return [(docid, float(score)) for docid, score in zip(candidates, scores.tolist()) if score > 0]
