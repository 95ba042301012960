"""The concept index: a Lucene impact index whose terms are a document's top-K SAE concepts (``c1234``)
with integer impacts, plus ``doc_codes/`` and a manifest recording the encoder, SAE and quantisers."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from clsr.errors import InvalidIndexError
from clsr.index.atomic import atomic_directory, directory_bytes
from clsr.index.concepts import QUERY_MODES, Quantizer, check_exact_scores
from clsr.index.doc_codes import ACTIVATION_DTYPE, DOC_CODES_DIR
from clsr.index.lucene import index_impact_vectors
from clsr.index.manifest import IndexManifest, WordsRecord, write_manifest
from clsr.index.streaming import CHUNK_ROWS, open_npy, read_rows, release, row_chunks
from clsr.index.words import DOC_WORDS_DIR, DocWords, write_doc_words
from clsr.progress import progress_bar

log = logging.getLogger("clsr.index")

def build_concept_index(ids: Sequence[str], embeddings: np.ndarray, index_dir: str | os.PathLike, *, sae,
                        sae_path: str | os.PathLike, encoder: dict, doc_k: int | None = None,
                        query_k: int | None = None, query_mode: str = "topk", bits: int = 8, source: str = "",
                        threads: int = 1, overwrite: bool = False, progress: bool = True,
                        embed_sae: bool = False, codes: tuple[np.ndarray, np.ndarray] | None = None,
                        encoding: dict | None = None, earlier_timings: Mapping[str, float] | None = None,
                        finish: Callable[[Path], Mapping[str, float]] | None = None,
                        words: tuple[DocWords, WordsRecord] | None = None, words_weight: float | None = None,
                        normalization: str | None = None, chunk_rows: int = CHUNK_ROWS) -> IndexManifest:
    """A Lucene impact index of the documents' top-``doc_k`` SAE concepts, plus ``doc_codes/``; with ``words``
    (`clsr.index.words.corpus_words` of the same passages, in the same order) also each passage's words with
    quantised BM25 impacts, in the same Lucene index and in ``doc_words/``, and the default mix of the two parts
    for searchers (``words_weight``, ``normalization``: `clsr.index.mix`).

    ``embeddings`` are the documents' dense vectors from ``encoder``; the SAE must have been
    trained on that encoder. ``query_k``/``query_mode`` are the defaults searchers will use.
    ``encoding`` (backend and dtype) is recorded as for :func:`build_dense_index`.
    ``embed_sae`` copies the SAE into the index's ``sae/`` (an adapted SAE belongs to its index, and so does one
    converted from a sentence-transformers CSR model, whose source folder and sha256 the manifest's ``sae.source``
    records).
    The SAE's fit to the corpus is measured (`check_sae_fit`) and recorded as ``sae_fit``.
    ``codes`` are the documents' top-``doc_k`` (activations, latents) when already computed with
    this SAE, e.g. by the Ray actors (``clsr.encode.ray``); otherwise they are computed here.
    ``finish(folder)`` runs on the complete index before it is renamed into place (tuning the hybrid's alpha,
    describing the concepts: what `clsr index` does after the Lucene build), so an interrupted build leaves
    nothing that looks complete; it returns its stages' seconds. The manifest's ``timings`` hold every stage's
    seconds, ``earlier_timings`` (e.g. encoding) and ``finish``'s included, and ``total_s``, their sum.

    Memory is bounded by ``chunk_rows``, not by the corpus: ``embeddings`` (n, d) and ``codes`` may be read-only
    memory maps (``np.load(..., mmap_mode="r")``: an embeddings folder, the embedding cache, Ray's shards) and are
    read ``chunk_rows`` rows at a time (`clsr.index.streaming`); the codes go straight into ``doc_codes/``'s files,
    and everything after (the quantiser's fit, the Lucene vectors, the empty passages) reads them back a chunk at a
    time. The files are byte for byte those of a build that held every code in memory, for any ``chunk_rows``: the
    SAE codes rows in the same batches (:data:`SAE_ROWS`) at the same offsets. Memory beyond the chunks: the ids,
    ``words`` (about 5 bytes a word of a passage) and the JVM's heap (`clsr.jvm`).
    """
    from clsr.sae.config import CONFIG_NAME
    from clsr.sae.model import WEIGHTS_NAME, sae_checksum

    if len(ids) != len(embeddings):
        raise InvalidIndexError(f"{len(ids)} ids but {len(embeddings)} embeddings")
    if len(set(ids)) != len(ids):
        raise InvalidIndexError("document ids are not unique")
    if query_mode not in QUERY_MODES:
        raise ValueError(f"query mode must be one of {QUERY_MODES}, not {query_mode!r}")
    sae.check_encoder(encoder)
    sae.check_dim(embeddings.shape[1], f"the embeddings of {encoder.get('model')}")
    doc_k = sae.check_k(doc_k)
    query_k = query_k or sae.config.k
    query_quantizer = Quantizer(scale=None, bits=8)
    try:
        check_exact_scores(doc_k, Quantizer(scale=1.0, bits=bits), query_quantizer)
    except ValueError as e:
        raise InvalidIndexError(str(e)) from None
    sae_fit = check_sae_fit(sae, embeddings)
    timings = {}
    with atomic_directory(index_dir, overwrite, sources={"the corpus": source, "the SAE": sae_path}) as building:
        sae_record = {"name": Path(sae_path).name, "path": str(Path(sae_path).resolve())}
        if embed_sae:
            (building / EMBEDDED_SAE_DIR).mkdir()
            for name in (CONFIG_NAME, WEIGHTS_NAME):
                shutil.copy2(Path(sae_path) / name, building / EMBEDDED_SAE_DIR / name)
            inherited = Path(sae_path) / "concepts.jsonl"  # descriptions kept through adaptation, if any
            if inherited.exists():
                shutil.copy2(inherited, building / EMBEDDED_SAE_DIR / inherited.name)
            sae_record = {"name": EMBEDDED_SAE_DIR, "path": EMBEDDED_SAE_DIR}  # relative: the index can move
        start = time.perf_counter()
        store = building / DOC_CODES_DIR
        store.mkdir()
        latents, activations = _write_codes(store, embeddings, codes, sae, len(ids), doc_k, chunk_rows, progress)
        # Fitted on the stored float16 activations, from which Lucene's impacts are quantised too, so explanations
        # recomputed from doc_codes/ sum to Lucene's scores exactly.
        doc_quantizer = Quantizer.fit(activations, bits, chunk_rows=chunk_rows)
        timings["concepts_s"] = time.perf_counter() - start

        if words is not None and len(words[0].indptr) != len(ids) + 1:
            raise InvalidIndexError(f"words of {len(words[0].indptr) - 1} passages for an index of {len(ids)}")

        def impacts(first: int, last: int) -> np.ndarray:
            return doc_quantizer.quantize(read_rows(activations, first, last, np.float32))

        postings, seconds = index_impact_vectors(latents, impacts, ids, building, threads=threads, progress=progress,
                                                 words=words[0] if words is not None else None,
                                                 chunk_rows=chunk_rows)
        timings.update(seconds)
        lucene_bytes = directory_bytes(building) - directory_bytes(store)  # doc_codes/ is written before Lucene
        words_record = None
        if words is not None:
            write_doc_words(building / DOC_WORDS_DIR, words[0])
            words_record = dataclasses.asdict(dataclasses.replace(
                words[1], bytes=directory_bytes(building / DOC_WORDS_DIR)))

        start = time.perf_counter()
        _write_ids(store / "ids.txt", ids, chunk_rows)
        empty_documents = _empty_documents(activations, chunk_rows)
        timings["doc_codes_s"] = time.perf_counter() - start

        csr_model = (sae.config.training.data or {}).get("csr_model")  # clsr.sae.sentence_transformers
        if csr_model is not None:
            sae_record["source"] = {"format": "sentence-transformers", **csr_model}
        adaptation = sae.config.training.adaptation
        adapted_from = (dataclasses.asdict(adaptation.base_sae)
                        if adaptation is not None and adaptation.base_sae is not None else None)
        manifest = write_manifest(
            building, "concepts", len(ids), source=source, encoder=encoder, encoding=encoding,
            sae={**sae_record, "sha256": sae_checksum(sae_path), "n_latents": sae.config.n_latents,
                 "k": sae.config.k, "d_in": sae.config.d_in, "adapted_from": adapted_from},
            sae_fit=sae_fit,
            doc_k=doc_k, doc_quantizer=doc_quantizer.to_dict(),
            query={"k": query_k, "mode": query_mode, "quantizer": query_quantizer.to_dict(),
                   **({"words_weight": words_weight, "normalization": normalization} if words is not None else {})},
            **({"words": words_record} if words_record is not None else {}),
            postings=postings, empty_documents=empty_documents,
            lucene_bytes=lucene_bytes, doc_codes_bytes=directory_bytes(store))
        if finish is not None:
            timings.update(finish(building))
            manifest = IndexManifest.read(building)  # finish may have recorded more (the tuned alpha)
        timings = {**(earlier_timings or {}), **timings}
        timings["total_s"] = sum(timings.values())
        return manifest.replace(timings={name: round(seconds, 3) for name, seconds in timings.items()}).write(building)


SAE_ROWS = 4096
"""Rows the SAE codes in one matrix product (`TopKSae.encode_numpy`'s batch). A product's float sums can change with
its batch's shape (issue 30), so a build codes embeddings in batches of this size at multiples of it whatever its
chunk size, and its codes are the same for every chunk size."""


def _write_codes(store: Path, embeddings: np.ndarray, codes: tuple[np.ndarray, np.ndarray] | None, sae,
                 rows: int, doc_k: int, chunk_rows: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """``latents.npy`` (uint16, or int32 past 65,536 latents) and ``activations.npy`` (float16) in ``store``: the
    given ``codes`` (activations, latents), or the SAE's top-``doc_k`` codes of ``embeddings``, a chunk of rows at a
    time. Returns both files memory-mapped read-only. Raises InvalidIndexError for codes of another shape."""
    if codes is not None:
        for array in codes:
            if tuple(array.shape) != (rows, doc_k):
                raise InvalidIndexError(f"codes of shape {tuple(array.shape)}, expected {(rows, doc_k)}")
    latent_dtype = np.uint16 if sae.config.n_latents <= 2**16 else np.int32
    paths = store / "latents.npy", store / "activations.npy"
    latents, activations = open_npy(paths[0], latent_dtype, (rows, doc_k)), open_npy(paths[1], ACTIVATION_DTYPE,
                                                                                     (rows, doc_k))
    step = chunk_rows if codes is not None else -(-chunk_rows // SAE_ROWS) * SAE_ROWS
    with progress_bar(total=rows, desc="encoding concepts", unit="doc", enabled=progress and codes is None) as bar:
        for start, stop in row_chunks(rows, step):
            if codes is not None:
                values = read_rows(codes[0], start, stop, np.float32)
                indices = read_rows(codes[1], start, stop, np.int32)
            else:
                values, indices = sae.encode_numpy(read_rows(embeddings, start, stop, np.float32), doc_k,
                                                   batch_size=SAE_ROWS)
            activations[start:stop] = values.astype(ACTIVATION_DTYPE)
            latents[start:stop] = indices.astype(latent_dtype)
            for written in (activations, latents):
                release(written, start, stop)
            bar.update(stop - start)
    for written in (activations, latents):
        written.flush()
    del latents, activations
    return np.load(paths[0], mmap_mode="r"), np.load(paths[1], mmap_mode="r")


def _empty_documents(activations: np.ndarray, chunk_rows: int) -> int:
    """How many rows have no positive activation: the passages with no concept impact (every activation > 0 gets
    an impact of at least 1)."""
    return sum(int((~(read_rows(activations, start, stop) > 0).any(axis=1)).sum())
               for start, stop in row_chunks(len(activations), chunk_rows))


def _write_ids(path: Path, ids: Sequence[str], chunk_rows: int) -> None:
    """``"\\n".join(ids)`` written a chunk at a time (one string of 8.8M ids would be one more copy of them)."""
    with open(path, "w", encoding="utf-8") as f:
        for start, stop in row_chunks(len(ids), chunk_rows):
            f.write(("\n" if start else "") + "\n".join(ids[start:stop]))


EMBEDDED_SAE_DIR = "sae"
POOR_FIT_RATIO = 1.5  # corpus FVU this many times the SAE's own passage FVU: adapting pays (issue 10's table)


def check_sae_fit(sae, embeddings: np.ndarray, sample: int = 2000) -> dict:
    """Measure how well the SAE reconstructs this corpus, and warn when far worse than on its own data.

    Compares the FVU on a seeded sample of the corpus's embeddings with the SAE's FVU on its own
    training passages (``reference_fvu`` in its config; older SAEs: the last epoch's FVU). Above
    ``POOR_FIT_RATIO`` times that, logs a warning that names both and points to `clsr adapt-sae`.
    Returns ``{"fvu", "reference_fvu", "sample", "poor_fit"}``.
    """
    from clsr.sae.train import passage_fvu

    training = sae.config.training
    reference = (training.reference_fvu if training.reference_fvu is not None
                 else (training.final_epoch or {}).get("fvu"))
    fvu = round(passage_fvu(sae, embeddings, sample=sample), 4)
    poor_fit = reference is not None and fvu > POOR_FIT_RATIO * reference
    if poor_fit:
        log.warning("the SAE fits this corpus poorly: FVU %.3f on %d of its passages against %.3f on the SAE's own "
                    "training passages; adapt it first (`clsr index --adapt ...`, or `clsr adapt-sae --corpus ... "
                    "--output DIR` then `--sae DIR`)", fvu, min(sample, len(embeddings)), reference)
    return {"fvu": fvu, "reference_fvu": reference, "sample": min(sample, len(embeddings)), "poor_fit": poor_fit}
