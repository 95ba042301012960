"""Concept vectors: text -> dense embedding -> SAE -> top-K concepts -> integer impacts.

The two facts an index depends on are defined here and nowhere else:

* **term naming**: latent 1234 is the pseudo-term ``c1234``;
* **quantisation**: impact = clip(round(activation * scale), 1, 2**bits - 1) for every activation
  that survives top-K (> 0). Nothing that survives is quantised to 0: Pyserini truncates float
  weights, so a weight below 1 would silently vanish from the index.

Queries have their own K, scale and mode: ``topk`` (the query's own top-K code, like documents) or
``projected`` (weight = max(0, q . atom) for every concept, keeping the K largest). Projected
queries score sum_i max(0, q . atom_i) * z_d,i, which approximates q . (d_hat - b_dec): the
original query against the reconstructed document, whose ranking is that of q . d_hat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from .dense import DenseEncoder
from .sae import TopKSae

TERM_PREFIX = "c"
QUERY_MODES = ("topk", "projected")


def concept_term(latent: int) -> str:
    return f"{TERM_PREFIX}{latent}"


def concept_latent(term: str) -> int:
    if not term.startswith(TERM_PREFIX) or not term[len(TERM_PREFIX):].isdigit():
        raise ValueError(f"{term!r} is not a concept term (expected {TERM_PREFIX}<latent id>)")
    return int(term[len(TERM_PREFIX):])


@dataclass(frozen=True)
class Quantizer:
    """impact = clip(round(activation * scale), 1, 2**bits - 1) for activations > 0; 0 stays 0."""

    scale: float
    bits: int = 8

    def __post_init__(self):
        if self.scale <= 0 or not 1 <= self.bits <= 31:
            raise ValueError(f"need scale > 0 and 1 <= bits <= 31, got scale={self.scale}, bits={self.bits}")

    @property
    def max_impact(self) -> int:
        return 2**self.bits - 1

    def quantize(self, activations: np.ndarray) -> np.ndarray:
        activations = np.asarray(activations, np.float64)
        impacts = np.clip(np.rint(activations * self.scale), 1, self.max_impact).astype(np.int64)
        return np.where(activations > 0, impacts, 0)

    @classmethod
    def fit(cls, activations: np.ndarray, bits: int = 8, percentile: float = 99.9) -> "Quantizer":
        """A scale that maps the given percentile of the positive activations to the top impact."""
        positive = np.asarray(activations)[np.asarray(activations) > 0]
        if positive.size == 0:
            raise ValueError("no positive activations to fit a quantiser to")
        return cls(scale=float((2**bits - 1) / np.percentile(positive, percentile)), bits=bits)

    def to_dict(self) -> dict:
        return {"rule": "clip(round(activation * scale), 1, 2**bits - 1) for activation > 0", **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "Quantizer":
        return cls(scale=float(values["scale"]), bits=int(values["bits"]))


def impact_vectors(values: np.ndarray, indices: np.ndarray, quantizer: Quantizer) -> list[dict[str, int]]:
    """Rows of (activation, latent) pairs as {term: impact} dicts, zero impacts left out."""
    impacts = quantizer.quantize(values)
    return [{concept_term(int(latent)): int(impact) for latent, impact in zip(row_latents, row_impacts) if impact > 0}
            for row_latents, row_impacts in zip(indices, impacts)]


class ConceptEncoder:
    """Text to concept impacts, for documents and queries, with one dense encoder and one SAE."""

    def __init__(self, dense: DenseEncoder, sae: TopKSae, *, doc_k: int | None = None, query_k: int | None = None,
                 query_mode: str = "topk", doc_quantizer: Quantizer, query_quantizer: Quantizer):
        sae.check_encoder(dense.config.to_dict())
        sae.check_dim(dense.dim, f"{dense.config.model}'s embeddings")
        if query_mode not in QUERY_MODES:
            raise ValueError(f"query mode must be one of {QUERY_MODES}, not {query_mode!r}")
        self.dense, self.sae = dense, sae
        self.doc_k = sae.check_k(doc_k)
        self.query_k = query_k or self.doc_k
        self.query_mode = query_mode
        self.doc_quantizer, self.query_quantizer = doc_quantizer, query_quantizer
        if query_mode == "topk":
            sae.check_k(self.query_k)

    def document_codes(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.sae.encode_numpy(embeddings, self.doc_k)

    def query_codes(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.query_mode == "topk":
            return self.sae.encode_numpy(embeddings, self.query_k)
        with torch.no_grad():
            projections = torch.as_tensor(np.asarray(embeddings, np.float32)) @ self.sae.W_dec.detach().T
            values, indices = projections.relu().topk(min(self.query_k, self.sae.config.n_latents), dim=1)
        return values.numpy(), indices.numpy().astype(np.int32)

    def encode_documents(self, texts: Sequence[str]) -> list[dict[str, int]]:
        return impact_vectors(*self.document_codes(self.dense.encode_documents(texts)), self.doc_quantizer)

    def encode_queries(self, texts: Sequence[str]) -> list[dict[str, int]]:
        return impact_vectors(*self.query_codes(self.dense.encode_queries(texts)), self.query_quantizer)


def dot(query: dict[str, int], document: dict[str, int]) -> int:
    """The integer score Lucene gives a document for a query: the dot product of the impacts."""
    return sum(weight * document.get(term, 0) for term, weight in query.items())
