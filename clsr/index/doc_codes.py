"""A concept index's ``doc_codes/``: every document's top-K code, for the hybrid fuser's rerank and for
explanations.

Only what cannot be derived is stored (issue 23): latent ids as uint16 (int32 past 65,536 latents) and
activations as float16, 4 bytes a concept where clsr 0.1 kept 8 plus a float32 decoded embedding (1.5 KB a
passage with MiniLM). The decoded embedding is ``W_dec^T a + b_dec``, derived on use (`decoded`); a dense
score against it needs no decoding at all (`decoded_scores`). The impacts in Lucene are quantised from the
same float16 activations, so an explanation recomputed from the store sums to Lucene's score exactly.
Indexes built by clsr 0.1 (float32 activations and ``reconstructed.npy``) read unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clsr.errors import InvalidIndexError

DOC_CODES_DIR = "doc_codes"
ACTIVATION_DTYPE = np.float16  # 11 significant bits: cosine of a decoded embedding to fp32's > 0.99999


class DocCodes:
    """A concept index's per-document store: ids and top-K codes (memory-mapped)."""

    def __init__(self, index_dir: str | os.PathLike):
        directory = Path(index_dir) / DOC_CODES_DIR
        if not directory.is_dir():
            raise InvalidIndexError(f"{index_dir} has no {DOC_CODES_DIR}/ (not a concept index, or built by an "
                                    "older clsr); rebuild it with `clsr index --kind concepts`")
        self.ids: list[str] = (directory / "ids.txt").read_text(encoding="utf-8").split("\n")
        self.latents = np.load(directory / "latents.npy", mmap_mode="r")  # (n, doc_k) uint16 or int32
        self.activations = np.load(directory / "activations.npy", mmap_mode="r")  # (n, doc_k) float16 (0.1: float32)
        stored = directory / "reconstructed.npy"  # clsr 0.1's decoded embeddings, (n, d) float32
        self.stored_reconstructions = np.load(stored, mmap_mode="r") if stored.exists() else None
        self._rows = {docid: row for row, docid in enumerate(self.ids)}

    def row(self, docid: str) -> int:
        try:
            return self._rows[docid]
        except KeyError:
            raise KeyError(f"document {docid!r} is not in this index") from None

    def code(self, docid: str) -> tuple[np.ndarray, np.ndarray]:
        """The document's (activations, latents), strongest first."""
        row = self.row(docid)
        return np.asarray(self.activations[row]), np.asarray(self.latents[row])

    def decoded(self, rows: np.ndarray | slice, sae) -> np.ndarray:
        """(len(rows), d) float32 decoded embeddings of these rows: ``sae.decode_numpy`` of their codes, or the
        stored ones of a clsr 0.1 index. ``sae`` is the index's SAE (`clsr.sae.model.TopKSae`)."""
        if self.stored_reconstructions is not None:
            return np.asarray(self.stored_reconstructions[rows], np.float32)
        return sae.decode_numpy(np.asarray(self.activations[rows], np.float32),
                                np.asarray(self.latents[rows], np.int64))

    def decoded_scores(self, rows: np.ndarray, projections: np.ndarray, offset: float) -> np.ndarray:
        """Dot products of a vector q with these rows' decoded embeddings, without decoding them:
        q . (W_dec^T a + b_dec) = sum_k a_k (W_dec q)[l_k] + b_dec . q. ``projections`` is W_dec q (n_latents,)
        and ``offset`` b_dec . q. K multiply-adds a document instead of K * d (384 with MiniLM)."""
        if self.stored_reconstructions is not None:
            raise ValueError("a clsr 0.1 index stores its decoded embeddings; score against those")
        import torch

        # embedding_bag does the gather, the float16 widening and the weighted sum in one pass: numpy's
        # float16 -> float32 conversion alone took longer than the whole sum (0.5 of 1.2 ms for 1000 rows).
        latents = torch.from_numpy(np.asarray(self.latents[rows]).astype(np.int32))
        activations = torch.from_numpy(np.asarray(self.activations[rows])).to(torch.float32)
        table = torch.from_numpy(np.asarray(projections, np.float32))[:, None]
        with torch.no_grad():
            scores = torch.nn.functional.embedding_bag(latents, table, per_sample_weights=activations, mode="sum")
        return scores[:, 0].numpy() + np.float32(offset)

    @property
    def dim(self) -> int | None:
        return None if self.stored_reconstructions is None else int(self.stored_reconstructions.shape[1])
