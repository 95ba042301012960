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

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from clsr.encode.dense import DenseEncoder
from clsr.errors import UsageError
from clsr.index.streaming import CHUNK_ROWS
from clsr.sae.model import TopKSae

TERM_PREFIX = "c"
# Query codes are computed one row at a time: a matrix product over n rows may sum in another order than over one
# (BLAS picks its kernel and blocking by shape), which moved a query's concepts with the batch it came in (issue 30).
# A row is a 384 x 8192 matrix-vector product, ~0.2 ms.
QUERY_ROWS = 1
QUERY_MODES = ("topk", "projected")


def concept_term(latent: int) -> str:
    return f"{TERM_PREFIX}{latent}"


def concept_latent(term: str) -> int:
    if not term.startswith(TERM_PREFIX) or not term[len(TERM_PREFIX):].isdigit():
        raise ValueError(f"{term!r} is not a concept term (expected {TERM_PREFIX}<latent id>)")
    return int(term[len(TERM_PREFIX):])


@dataclass(frozen=True)
class Quantizer:
    """impact = clip(round(activation * scale), 1, 2**bits - 1) for activations > 0; 0 stays 0.

    ``scale=None`` means per vector: each row's own largest activation maps to the top impact. Queries
    use that: a query's ranking does not depend on its scale, so each query gets the full 8 bits and
    none is clipped, however far it is from the corpus. Documents need one fixed scale (fitted on the
    corpus), because their impacts are compared with one another.
    """

    scale: float | None
    bits: int = 8

    def __post_init__(self):
        if (self.scale is not None and not self.scale > 0) or not 1 <= self.bits <= 31:
            raise ValueError(f"need scale > 0 (or None) and 1 <= bits <= 31, got scale={self.scale}, bits={self.bits}")

    @property
    def max_impact(self) -> int:
        return 2**self.bits - 1

    def quantize(self, activations: np.ndarray) -> np.ndarray:
        """Integer impacts (int64) of the same shape; with a per-vector scale, each row is scaled by its own maximum.

        Works in float64 and int64 copies of its input: a build quantises a chunk of rows at a time
        (`clsr.index.streaming.CHUNK_ROWS`), which a fixed scale makes identical to quantising all rows at once.
        """
        activations = np.asarray(activations, np.float64)
        if self.scale is not None:
            scale = self.scale
        else:
            row_max = activations.max(axis=-1, keepdims=True) if activations.size else np.ones_like(activations)
            scale = self.max_impact / np.where(row_max > 0, row_max, 1.0)
        impacts = np.clip(np.rint(activations * scale), 1, self.max_impact).astype(np.int64)
        return np.where(activations > 0, impacts, 0)

    @classmethod
    def fit(cls, activations: np.ndarray, bits: int = 8, percentile: float = 99.9,
            chunk_rows: int = CHUNK_ROWS) -> Quantizer:
        """A fixed scale that maps the given percentile of the positive activations to the top impact.

        The percentile is ``np.percentile``'s (linear interpolation) of the positive values, exactly, but found
        without copying them (`clsr.index.streaming.percentile`: two order statistics from histograms of the
        values' bit patterns, read ``chunk_rows`` rows at a time), so ``activations`` may be a memory map of a
        whole corpus's codes: one pass over a float16 array, two or three over a float32 one. Float16 activations
        (an index's ``doc_codes/activations.npy``) are interpolated in float32, as NumPy computed the scale when a
        build fitted their float32 copy; so the scale is the same whichever of the two is given.
        Raises ValueError when no activation is > 0.
        """
        from clsr.index.streaming import percentile as exact_percentile

        if not isinstance(activations, np.ndarray):
            activations = np.asarray(activations)
        if activations.dtype.kind != "f" or activations.dtype.itemsize not in (2, 4, 8):
            positive = activations[activations > 0]  # integers and long doubles: the plain way, in memory
            if positive.size == 0:
                raise ValueError("no positive activations to fit a quantiser to")
            return cls(scale=float((2**bits - 1) / np.percentile(positive, percentile)), bits=bits)
        as_dtype = np.float32 if activations.dtype == np.float16 else activations.dtype
        try:
            value = exact_percentile(activations, percentile, chunk_rows, as_dtype=as_dtype)
        except ValueError as e:
            if "no positive" in str(e):
                raise ValueError("no positive activations to fit a quantiser to") from None
            raise
        return cls(scale=float((2**bits - 1) / value), bits=bits)

    def to_dict(self) -> dict:
        rule = "clip(round(activation * scale), 1, 2**bits - 1) for activation > 0"
        if self.scale is None:
            rule += "; scale = (2**bits - 1) / the vector's largest activation"
        return {"rule": rule, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> Quantizer:
        scale = values["scale"]
        return cls(scale=None if scale is None else float(scale), bits=int(values["bits"]))


# Lucene sums impact products in float32, which holds integers exactly only up to 2**24.
FLOAT32_EXACT_LIMIT = 2**24


def check_exact_scores(doc_k: int, doc_quantizer: Quantizer, query_quantizer: Quantizer) -> None:
    """Refuse settings whose largest possible score Lucene's float32 could not hold exactly.

    A document has at most ``doc_k`` concepts, so at most ``doc_k`` products reach its score,
    however many concepts the query has.
    """
    largest = doc_k * doc_quantizer.max_impact * query_quantizer.max_impact
    if largest >= FLOAT32_EXACT_LIMIT:
        raise ValueError(
            f"doc K={doc_k} with {doc_quantizer.bits}-bit documents and {query_quantizer.bits}-bit queries can score "
            f"up to {largest:,}, beyond 2**24 where Lucene's float32 scores stop being exact integers; "
            "use fewer bits or a smaller K")


def impact_vectors(values: np.ndarray, indices: np.ndarray, quantizer: Quantizer) -> list[dict[str, int]]:
    """Rows of (activation, latent) pairs as {term: impact} dicts, zero impacts left out."""
    impacts = quantizer.quantize(values)
    # tolist() first: Python ints are much cheaper to hash and format than numpy scalars (query latency).
    return [{concept_term(latent): impact for latent, impact in zip(row_latents, row_impacts) if impact > 0}
            for row_latents, row_impacts in zip(np.asarray(indices).tolist(), impacts.tolist())]


def steer_codes(values: np.ndarray, indices: np.ndarray, steering: Mapping[int, float]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (activations, latents) with concept weights edited: {latent: factor}.

    A concept the row has gets its activation times the factor (0 removes it). A concept it lacks,
    with a factor > 0, is added at the row's mean positive activation times the factor, so that
    ``--boost c12=2`` can pull in a concept the query did not have. Rows come back sorted, strongest first.
    """
    if not steering:
        return values, indices
    added = [latent for latent, factor in steering.items() if factor > 0]
    rows_values, rows_indices = [], []
    for row_values, row_indices in zip(np.asarray(values, np.float32), np.asarray(indices)):
        weights = {int(l): float(v) for l, v in zip(row_indices, row_values) if v > 0}
        mean = float(np.mean(list(weights.values()))) if weights else 1.0
        for latent in added:
            weights.setdefault(latent, mean)
        for latent, factor in steering.items():
            if latent in weights:
                weights[latent] *= factor
        ordered = sorted(((v, l) for l, v in weights.items() if v > 0), reverse=True)
        rows_values.append([v for v, _ in ordered])
        rows_indices.append([l for _, l in ordered])
    width = max((len(r) for r in rows_values), default=0)
    out_values = np.zeros((len(rows_values), width), np.float32)
    out_indices = np.zeros((len(rows_values), width), np.int32)
    for row, (row_values, row_indices) in enumerate(zip(rows_values, rows_indices)):
        out_values[row, :len(row_values)] = row_values
        out_indices[row, :len(row_indices)] = row_indices
    return out_values, out_indices


def check_latents(latents, n_latents: int, what: str = "concept") -> None:
    """Raise UsageError naming the valid range when a latent id is outside an SAE's dictionary."""
    outside = sorted(latent for latent in latents if not 0 <= latent < n_latents)
    if outside:
        raise UsageError(f"{what} {concept_term(outside[0])} does not exist: this SAE's concepts are "
                         f"{concept_term(0)}..{concept_term(n_latents - 1)}")


def parse_steering(boost: Sequence[str] = (), suppress: Sequence[str] = ()) -> dict[int, float]:
    """``["c12=2.0", "c7"]`` boosts (a bare term means x2) and ``["c77"]`` suppressions as {latent: factor}."""
    steering: dict[int, float] = {}
    for item in boost:
        term, _, factor = item.partition("=")
        try:
            steering[concept_latent(term.strip())] = float(factor) if factor else 2.0
        except ValueError as e:
            raise ValueError(f"--boost {item!r}: expected c<latent>=<factor>, e.g. c123=2.0 ({e})") from None
    for term in suppress:
        steering[concept_latent(term.strip())] = 0.0
    return steering


class ConceptEncoder:
    """Text to concept impacts, for documents and queries, with one dense encoder and one SAE.

    ``doc_quantizer`` is fitted on the corpus when an index is built (``None`` until then);
    queries are quantised per vector unless another quantiser is given.
    """

    def __init__(self, dense: DenseEncoder, sae: TopKSae, *, doc_k: int | None = None, query_k: int | None = None,
                 query_mode: str = "topk", doc_quantizer: Quantizer | None = None,
                 query_quantizer: Quantizer = Quantizer(scale=None), words=None, words_weight: float = 0.0,
                 normalization: str = "self", concept_max_impact: np.ndarray | None = None):
        sae.check_encoder(dense.config.to_dict())
        sae.check_dim(dense.dim, f"{dense.config.model}'s embeddings")
        if query_mode not in QUERY_MODES:
            raise ValueError(f"query mode must be one of {QUERY_MODES}, not {query_mode!r}")
        self.dense, self.sae = dense, sae
        self.doc_k = sae.check_k(doc_k)
        self.query_k = query_k or sae.config.k
        self.query_mode = query_mode
        self.doc_quantizer, self.query_quantizer = doc_quantizer, query_quantizer
        self.steering: dict[int, float] = {}  # {latent: factor}, applied to query codes; see steer_codes
        # An index with words (`clsr.index.mix`): its WordSide, the words' weight W, the normalisation rule, and each
        # concept's largest impact in the index (for the "bound" rule).
        self.words, self.words_weight, self.normalization = words, words_weight, normalization
        self.concept_max_impact = concept_max_impact
        if query_mode == "topk":
            sae.check_k(self.query_k)
        elif not 0 < self.query_k <= sae.config.n_latents:
            raise ValueError(f"query k={self.query_k}: projected queries keep 1..{sae.config.n_latents} concepts")

    def document_codes(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(activations, latents) as a concept index stores them: activations rounded to float16
        (`clsr.index.doc_codes.ACTIVATION_DTYPE`), from which its impacts are quantised."""
        from clsr.index.doc_codes import ACTIVATION_DTYPE

        activations, latents = self.sae.encode_numpy(embeddings, self.doc_k)
        return activations.astype(ACTIVATION_DTYPE).astype(np.float32), latents

    def query_codes(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(activations (n, query_k) float32, latents (n, query_k) int32) of query embeddings (n, d), one row at a
        time (:data:`QUERY_ROWS`), so that a query's code alone is its code in any batch."""
        if self.query_mode == "topk":
            return self.sae.encode_numpy(embeddings, self.query_k, batch_size=QUERY_ROWS)
        embeddings = np.asarray(embeddings, np.float32)
        values = np.zeros((len(embeddings), self.query_k), np.float32)
        indices = np.zeros((len(embeddings), self.query_k), np.int32)
        with torch.no_grad():
            for row in range(len(embeddings)):
                projections = torch.from_numpy(embeddings[row:row + 1]) @ self.sae.W_dec.detach().T
                row_values, row_indices = projections.relu().topk(self.query_k, dim=1)
                values[row], indices[row] = row_values[0].numpy(), row_indices[0].numpy()
        return values, indices

    def encode_documents(self, texts: Sequence[str]) -> list[dict[str, int]]:
        if self.doc_quantizer is None:
            raise ValueError("no document quantiser: it is fitted on the corpus when an index is built")
        return impact_vectors(*self.document_codes(self.dense.encode_documents(texts)), self.doc_quantizer)

    def steered_query_codes(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return steer_codes(*self.query_codes(embeddings), self.steering)

    def query_vectors(self, embeddings: np.ndarray, texts: Sequence[str] | None = None) -> list[dict[str, int]]:
        """Query embeddings (from ``dense.encode_queries``) to {term: impact} dicts, steering applied; for an index
        with words, given the query ``texts``, each is mixed with the query's words into one query
        (`clsr.index.mix.mixed_query`, the index's W and normalisation)."""
        values, latents = self.steered_query_codes(embeddings)
        vectors = impact_vectors(values, latents, self.query_quantizer)
        if self.words is None or texts is None or self.words_weight == 0:
            return vectors
        return [self.mix(vector, row_values, row_latents, text)
                for vector, row_values, row_latents, text in zip(vectors, values, latents, texts)]

    def mix(self, vector: dict[str, int], values: np.ndarray, latents: np.ndarray, text: str) -> dict[str, int]:
        """One query's concept ``vector`` (from its steered code ``values``/``latents``) mixed with its words
        (`clsr.index.mix.WordSide.mix`)."""
        activations = {concept_term(int(latent)): float(value) for latent, value in zip(latents, values) if value > 0}
        return self.words.mix(vector, activations, text, self.words_weight, self.normalization, self.doc_quantizer,
                              self.concept_max_impact)

    def steer_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """The embeddings moved by the steering, through the decoder: q + sum_c (a'_c - a_c) W_dec[c]."""
        if not self.steering:
            return embeddings
        before, after = self.query_codes(embeddings), self.steered_query_codes(embeddings)
        return embeddings + self.sae.decode_numpy(*after) - self.sae.decode_numpy(*before)

    def encode_queries(self, texts: Sequence[str]) -> list[dict[str, int]]:
        return self.query_vectors(self.dense.encode_queries(texts), texts)


def dot(query: dict[str, int], document: dict[str, int]) -> int:
    """The integer score Lucene gives a document for a query: the dot product of the impacts."""
    return sum(weight * document.get(term, 0) for term, weight in query.items())
