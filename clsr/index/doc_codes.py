"""A concept index's ``doc_codes/``: every document's top-K code and decoded embedding, for the hybrid
fuser's rerank and for explanations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clsr.errors import InvalidIndexError

DOC_CODES_DIR = "doc_codes"
class DocCodes:
    """A concept index's per-document store: ids, top-K codes and decoded embeddings (memory-mapped)."""

    def __init__(self, index_dir: str | os.PathLike):
        directory = Path(index_dir) / DOC_CODES_DIR
        if not directory.is_dir():
            raise InvalidIndexError(f"{index_dir} has no {DOC_CODES_DIR}/ (not a concept index, or built by an "
                                    "older clsr); rebuild it with `clsr index --kind concepts`")
        self.ids: list[str] = (directory / "ids.txt").read_text(encoding="utf-8").split("\n")
        self.latents = np.load(directory / "latents.npy", mmap_mode="r")  # (n, doc_k) int
        self.activations = np.load(directory / "activations.npy", mmap_mode="r")  # (n, doc_k) float32
        self.reconstructed = np.load(directory / "reconstructed.npy", mmap_mode="r")  # (n, d) float32
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
