"""A concept index exported as a sentence-transformers ``SparseEncoder`` (``clsr export sentence-transformers``).

The index's manifest gives the SAE (its folder, checked by sha256), the dense encoder, the doc K and the query K;
:func:`clsr.sae.sentence_transformers.export_sparse_encoder` writes the folder, and the model card says what the SAE
was trained on and how it relates to the indexed corpus (zero-shot, adapted, transductive).
"""

from __future__ import annotations

import os
from pathlib import Path

from clsr.errors import InvalidIndexError
from clsr.index.manifest import IndexManifest


def export_index(index_dir: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the concept index's SAE and encoder at ``index_dir`` as a ``SparseEncoder`` folder at ``output``.

    Raises InvalidIndexError for an index of another kind, or whose SAE is missing or no longer matches it, and
    UnsafeOutputError for an ``output`` that is, contains or lies inside the index (or as
    :func:`clsr.sae.sentence_transformers.export_sparse_encoder` says).
    """
    from clsr.encode.dense import EncoderConfig
    from clsr.index.atomic import SENTENCE_TRANSFORMERS, check_replaceable
    from clsr.sae.config import SaeConfig
    from clsr.sae.model import sae_checksum
    from clsr.sae.sentence_transformers import ExportNotes, export_sparse_encoder
    from clsr.search.concept_encoder import recorded_sae_path

    check_replaceable(output, SENTENCE_TRANSFORMERS, {"the index being exported": index_dir})  # before reading it
    manifest = IndexManifest.read(index_dir)
    if manifest.kind != "concepts":
        raise InvalidIndexError(f"{index_dir} is a {manifest.kind} index; only a concept index has an SAE to export")
    sae_path = recorded_sae_path(index_dir, manifest.sae)
    if sae_checksum(sae_path) != manifest.sae.sha256:
        raise InvalidIndexError(f"{index_dir}: the SAE at {sae_path} is not the one the index was built with "
                                "(its sha256 differs)")
    config = SaeConfig.read(sae_path)
    training = config.training
    notes = ExportNotes(
        sae_name=(manifest.sae.source or {}).get("path") or manifest.sae.name,
        trained_on=training.seen_collections(),
        # A CSR model's folder records no training data, so clsr cannot tell zero-shot from transductive.
        relation=("of unknown relation (a CSR model records no training data)" if manifest.sae.source
                  else f"**{training.relation(manifest.source)}**") if manifest.source else None,
        corpus=manifest.source or None,
        corpus_fvu=manifest.sae_fit.fvu if manifest.sae_fit else None,
        reference_fvu=training.reference_fvu if training.reference_fvu is not None
        else (training.final_epoch or {}).get("fvu"),
        query_mode=manifest.query.mode,
        words_weight=manifest.query.words_weight if manifest.words is not None else None,
        figures={"documents indexed": manifest.documents, "doc K": manifest.doc_k,
                 **({"hybrid alpha (tuned on " + manifest.hybrid_alpha.tuned_on + ")": manifest.hybrid_alpha.alpha}
                    if manifest.hybrid_alpha else {})})
    return export_sparse_encoder(output, sae_path=sae_path, encoder=EncoderConfig.from_dict(manifest.encoder),
                                 doc_k=manifest.doc_k, query_k=manifest.query.k, notes=notes, overwrite=overwrite,
                                 sources={"the index being exported": index_dir})
