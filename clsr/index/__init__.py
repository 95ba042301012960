"""Index builds: BM25 and concept (Lucene, via Anserini) and dense (flat embeddings), each with a manifest.

Every index directory holds ``clsr-index.json``: what kind of index it is, what built it and from
what. Searchers read it to know how to search, and to refuse an index that does not match.

Builds are atomic: the index is written into a hidden temporary sibling and renamed into place
only when complete, so an interrupted build never leaves a directory that looks like an index.
Rebuilding over an existing index needs ``overwrite=True``.

A concept index is a Lucene impact index whose terms are SAE concepts (``c1234``) with integer
impacts, written as a JsonVectorCollection and indexed ``-impact -pretokenized``, so stock
``LuceneImpactSearcher`` searches it. Beside the Lucene files, ``doc_codes/`` keeps every
document's top-K code (latents and float activations, the compact store) and its decoded
embedding, for the hybrid fuser and for explanations.

Run ``python -m clsr.index --help`` (or ``clsr index``).
"""

from clsr.errors import InvalidIndexError
from clsr.index.atomic import atomic_directory, directory_bytes
from clsr.index.concept_index import build_concept_index, check_sae_fit
from clsr.index.dense import build_dense_index
from clsr.index.doc_codes import DOC_CODES_DIR, DocCodes
from clsr.index.lucene import BM25_B, BM25_K1, build_bm25_index
from clsr.index.manifest import MANIFEST_NAME, IndexManifest, read_manifest, write_manifest

__all__ = ["BM25_B", "BM25_K1", "DOC_CODES_DIR", "MANIFEST_NAME", "DocCodes", "IndexManifest", "InvalidIndexError",
           "atomic_directory", "build_bm25_index", "build_concept_index", "build_dense_index", "check_sae_fit",
           "directory_bytes", "read_manifest", "write_manifest"]
