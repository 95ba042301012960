"""clsr: Concept-Level Sparse Retrieval on Pyserini/Lucene."""

__version__ = "0.2.0"
