"""The query side of a concept index: the ConceptEncoder it was built with, checked against its manifest."""

from __future__ import annotations

import os
from pathlib import Path

from clsr.encode.dense import EncoderConfig
from clsr.errors import InvalidIndexError
from clsr.index.concepts import Quantizer
from clsr.index.manifest import IndexManifest, SaeRecord, read_manifest


def recorded_sae_path(index_dir: str | os.PathLike, recorded: SaeRecord) -> Path:
    """The folder of the SAE a manifest's ``sae`` record names (inside the index, the bundled one, or its path)."""
    from clsr.sae.model import DEFAULT_SAE, WEIGHTS_NAME, default_sae_path

    candidates = [Path(index_dir) / recorded.path]  # a relative path is an SAE kept inside the index
    if recorded.name == DEFAULT_SAE and default_sae_path() is not None:
        candidates.append(default_sae_path())  # the bundled SAE, wherever this clsr is installed
    for candidate in candidates:
        if (candidate / WEIGHTS_NAME).exists():
            return candidate
    raise InvalidIndexError(f"{index_dir} was built with the SAE at {recorded.path}, which is not there; "
                            "pass its folder with --sae")


def load_index_sae(index_dir: str | os.PathLike, manifest: IndexManifest | None = None):
    """The SAE a concept index was built with (`clsr.sae.model.TopKSae`), found where its manifest records it.
    Raises InvalidIndexError when it is not there."""
    from clsr.sae.model import TopKSae

    manifest = manifest if manifest is not None else read_manifest(index_dir)
    return TopKSae.load_from_disk(recorded_sae_path(index_dir, manifest.sae))


def load_concept_encoder(index_dir: str | os.PathLike, *, encoder: EncoderConfig | None = None,
                         sae_path: str | os.PathLike | None = None, query_k: int | None = None,
                         query_mode: str | None = None, force: bool = False, device: str = "cpu",
                         dtype: str | None = None, batch_size: int = 32, backend: str | None = None,
                         manifest: IndexManifest | None = None, where: str | None = None,
                         words_weight: float | None = None):
    """The ConceptEncoder a concept index was built with, checked against the manifest.

    ``encoder`` and ``sae_path`` default to the index's own; given ones that differ from the
    manifest are refused (naming both sides) unless ``force``. ``query_k``/``query_mode`` override
    the index's query defaults. ``backend`` and ``dtype`` default to the index's
    (:func:`clsr.encode.dense.query_encoding`), so queries get the numerics the documents got on any CPU: a
    torch-fp32 index stays fp32 where auto would mean bf16. ``manifest`` (with ``where`` naming it in errors) is
    the index's manifest kept elsewhere, e.g. in a Milvus collection; ``index_dir`` then only locates an
    SAE recorded relative to the index. For an index with words, queries mix them with the concepts
    (`clsr.index.mix`) at ``words_weight`` (default: the manifest's; 0: concepts only). Raises UsageError for a
    ``words_weight`` on an index without words, or below 0.
    """
    from clsr.encode.dense import DenseEncoder, EncoderConfig, query_encoding
    from clsr.index.concepts import ConceptEncoder
    from clsr.sae.model import SaeMismatchError, TopKSae, sae_checksum

    manifest = manifest if manifest is not None else read_manifest(index_dir)
    where = where or f"index {index_dir}"
    if manifest.kind != "concepts":
        raise InvalidIndexError(f"{index_dir} is a {manifest.kind} index, not a concept index")
    indexed_with = EncoderConfig.from_dict(manifest.encoder)
    if encoder is not None and encoder != indexed_with and not force:
        raise InvalidIndexError(f"the query encoder does not match the index (pass --force to search anyway).\n"
                                f"  {where}: {indexed_with}\n  query encoder: {encoder}")
    recorded = manifest.sae
    sae_path = Path(sae_path) if sae_path is not None else recorded_sae_path(index_dir, recorded)
    checksum = sae_checksum(sae_path)
    if checksum != recorded.sha256 and not force:
        raise SaeMismatchError(
            "the SAE does not match the index (pass --force to search anyway).\n"
            f"  {where}: SAE {recorded.name} ({recorded.n_latents} latents, k={recorded.k}), "
            f"sha256 {recorded.sha256[:16]}\n  given {sae_path}: sha256 {checksum[:16]}")
    sae = TopKSae.load_from_disk(sae_path, device=device)
    query = manifest.query
    words = _word_side(index_dir, manifest, words_weight)
    backend, dtype = query_encoding(manifest.encoding, backend, dtype)
    dense = DenseEncoder(encoder or indexed_with, device=device, dtype=dtype, batch_size=batch_size, backend=backend)
    return ConceptEncoder(dense, sae, doc_k=manifest.doc_k, query_k=query_k or query.k,
                          query_mode=query_mode or query.mode,
                          doc_quantizer=Quantizer.from_dict(manifest.doc_quantizer),
                          query_quantizer=Quantizer.from_dict(query.quantizer), words=words,
                          words_weight=(words_weight if words_weight is not None else query.words_weight) or 0.0,
                          normalization=query.normalization or "self",
                          concept_max_impact=_concept_max_impact(index_dir, manifest, words))


def _word_side(index_dir, manifest: IndexManifest, words_weight: float | None):
    """The index's WordSide (`clsr.index.mix`), or None for a concept-only index; a words weight is refused there."""
    from clsr.errors import UsageError

    if words_weight is not None and words_weight < 0:
        raise UsageError(f"--words-weight {words_weight}: give 0 (concepts only) or more")
    if manifest.words is None:
        if words_weight:
            raise UsageError(f"--words-weight {words_weight}: {index_dir} holds concepts only (built with --no-words "
                             "or by an older clsr); rebuild it to search words beside concepts")
        return None
    from clsr.index.mix import WordSide

    return WordSide.load(index_dir, manifest.words)


def _concept_max_impact(index_dir, manifest: IndexManifest, words):
    """Each concept's largest impact in the index (the "bound" normalisation's), or None where unused."""
    if words is None or manifest.query.normalization != "bound":
        return None
    import numpy as np

    from clsr.index.doc_codes import DocCodes

    codes = DocCodes(index_dir)
    impacts = Quantizer.from_dict(manifest.doc_quantizer).quantize(np.asarray(codes.activations, np.float32))
    largest = np.zeros(manifest.sae.n_latents, np.int64)
    np.maximum.at(largest, np.asarray(codes.latents, np.int64), impacts)
    return largest
