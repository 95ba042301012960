"""Training data for an SAE: embeddings of passages, their sentences, random word spans and
training queries, plus each training query's nearest documents for the KL terms.

Training data is scarce (a few thousand passages per collection), and a SAE fitted on passages
alone reconstructs queries badly. Sentences and 4-20-word spans are short and query-like and
multiply the data ~20x. Queries come only from non-test splits; with none, spans stand in as
pseudo-queries. Every source is encoded through the embedding cache, and the assembled arrays are
written as .npy and memory-mapped, so training streams them.

`clsr train-sae` (``python -m clsr.sae train-sae``) lives here, above `clsr.sae.train`, because a training
run starts from the data this module assembles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clsr.data import DataError, Document, load_corpus, load_topics, qrels_splits, resolve
from clsr.encode.dense import DenseEncoder, cache_root, encode_corpus
from clsr.sae.train import TrainingData, nearest_documents

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")
EVALUATION_SPLITS = ("test", "dev.small", "dl19", "dl20")  # never trained on
HELD_OUT_SPLITS = ("dev",)  # not trained on unless asked: kept for model selection and tuning


def split_sentences(text: str, min_words: int = 4) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if len(s.split()) >= min_words]


def random_spans(text: str, rng: np.random.Generator, count: int, min_words: int = 4,
                 max_words: int = 20) -> list[str]:
    words = text.split()
    if len(words) < min_words:
        return []
    spans = []
    for _ in range(count):
        length = int(rng.integers(min_words, min(max_words, len(words)) + 1))
        start = int(rng.integers(0, len(words) - length + 1))
        spans.append(" ".join(words[start:start + length]))
    return spans


def training_query_splits(source: Path) -> list[str]:
    """The qrels splits of a BEIR folder to train on by default: not test or dev (dev selects models)."""
    if not (source / "qrels").is_dir():
        return []
    return [split for split in qrels_splits(source) if split not in EVALUATION_SPLITS + HELD_OUT_SPLITS]


@dataclass(frozen=True)
class DataRecipe:
    """What an SAE trains on besides whole passages; `clsr train-sae` takes one flag per field."""

    sentences: bool = field(default=True, metadata={"help": "do not add sentence splits"})
    spans_per_doc: int = field(default=5, metadata={"help": "random 4-20-word spans per passage"})
    neighbours: int = field(default=8, metadata={"help": "nearest documents per training query"})
    seed: int = 0


def _encode(encoder: DenseEncoder, texts: Sequence[Document], what: str) -> np.ndarray:
    if not texts:
        return np.zeros((0, encoder.dim), np.float32)
    return np.asarray(encode_corpus(encoder, list(texts), desc=f"encoding {what}").embeddings)


def build_training_data(datasets: Sequence[str], encoder: DenseEncoder, recipe: DataRecipe = DataRecipe(),
                        query_splits: dict[str, list[str]] | None = None,
                        unjudged_queries: Sequence[str] = ()) -> tuple[TrainingData, dict]:
    """Assemble (and cache) the training arrays for `datasets`; returns them with a provenance dict.

    `query_splits` maps a dataset to the splits whose queries to train on (default: every qrels split
    but the evaluation ones). Asking for an evaluation split is an error. Datasets named in
    `unjudged_queries` train on every query of their queries file instead; that is refused for a
    folder that has qrels, whose queries may be evaluation queries.
    """
    rng = np.random.default_rng(recipe.seed)
    parts: dict[str, list[np.ndarray]] = {"documents": [], "sentences": [], "spans": [], "queries": []}
    pairs_queries, neighbour_rows = [], []
    provenance: dict = {"datasets": {}, "recipe": recipe.__dict__}
    document_offset = 0
    for dataset in datasets:
        source = resolve(dataset)
        documents = load_corpus(source)
        splits = (query_splits or {}).get(dataset)
        if splits is None:
            splits = training_query_splits(source) if isinstance(source, Path) else []
        if leaked := [s for s in splits if s in EVALUATION_SPLITS]:
            raise DataError(f"{dataset}: refusing to train on evaluation split(s) {leaked}")
        sentences = [Document(f"{d.id}#s{i}", s) for d in documents
                     for i, s in enumerate(split_sentences(d.text))] if recipe.sentences else []
        spans = [Document(f"{d.id}#w{i}", s) for d in documents
                 for i, s in enumerate(random_spans(d.text, rng, recipe.spans_per_doc))]
        queries = {}
        if dataset in unjudged_queries:
            if not isinstance(source, Path) or not source.is_dir() or (source / "qrels").exists():
                raise DataError(f"{dataset}: only a folder without qrels/ can lend all its queries to training "
                                "(judged queries may be evaluation queries); name training splits instead")
            queries.update(load_topics(source, None))
            splits = ["all (unjudged)"]
        else:
            for split in splits:
                queries.update(load_topics(source, split))
        doc_vectors = _encode(encoder, documents, f"{dataset} passages")
        span_vectors = _encode(encoder, spans, f"{dataset} spans")
        # Training data: batched (padding's rounding is noise to training, and batching is faster here).
        query_vectors = (encoder.encode_queries(list(queries.values()), batch_invariant=False) if queries
                         else np.zeros((0, encoder.dim), np.float32))
        parts["documents"].append(doc_vectors)
        parts["sentences"].append(_encode(encoder, sentences, f"{dataset} sentences"))
        parts["spans"].append(span_vectors)
        parts["queries"].append(query_vectors)
        # The KL terms need queries: real ones where the collection has training queries, else spans.
        kl_queries = query_vectors if len(query_vectors) else span_vectors[rng.permutation(len(span_vectors))[:5000]]
        pairs_queries.append(kl_queries)
        neighbour_rows.append(nearest_documents(kl_queries, doc_vectors, recipe.neighbours) + document_offset)
        document_offset += len(doc_vectors)
        provenance["datasets"][str(dataset)] = {
            "passages": len(documents), "sentences": len(sentences), "spans": len(spans),
            "query_splits": splits, "queries": len(queries),
            "kl_queries": "training queries" if len(query_vectors) else "spans (no training split)"}
        log.info("%s: %s", dataset, provenance["datasets"][str(dataset)])
    arrays = {
        "vectors": np.concatenate([a for name in ("documents", "sentences", "spans", "queries") for a in parts[name]]),
        "queries": np.concatenate(pairs_queries),
        "documents": np.concatenate(parts["documents"]),
        "neighbours": np.concatenate(neighbour_rows),
    }
    return _memory_mapped(arrays, provenance), provenance


def _memory_mapped(arrays: dict[str, np.ndarray], provenance: dict) -> TrainingData:
    """Write the arrays once under the cache and hand them back memory-mapped."""
    key = hashlib.sha256(json.dumps(provenance, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        key.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
    directory = cache_root() / "sae-training" / key.hexdigest()[:20]
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if not (directory / f"{name}.npy").exists():
            np.save(directory / f"{name}.npy.tmp.npy", array)
            (directory / f"{name}.npy.tmp.npy").rename(directory / f"{name}.npy")
    return TrainingData(**{name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in arrays})
