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

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..concepts import QUERY_MODES, Quantizer, check_exact_scores, concept_term
from ..data import Document
from ..errors import InvalidIndexError
from ..progress import progress_bar
from .manifest import MANIFEST_NAME, IndexManifest

if TYPE_CHECKING:
    from ..dense import EncoderConfig

log = logging.getLogger(__name__)

BM25_K1, BM25_B = 0.9, 0.4  # Pyserini's defaults, which its published BEIR "flat" figures use.


def write_manifest(directory: Path, kind: str, documents: int, **fields) -> dict:
    """Write a new build's manifest (:meth:`IndexManifest.create` with ``fields``) into ``directory``;
    returns it as a dict. Raises InvalidIndexError for an unknown kind or field."""
    return IndexManifest.from_dict(IndexManifest.create(kind, documents).to_dict() | fields,
                                   where=f"the {kind} index being built").write(directory).to_dict()


def update_manifest(directory: str | os.PathLike, **fields) -> dict:
    """Add or replace ``fields`` in a finished index's manifest, atomically (:meth:`IndexManifest.write`), so a
    reader sees the old manifest or the new one, never half of one. Returns the new manifest as a dict."""
    path = Path(directory) / MANIFEST_NAME
    return IndexManifest.from_dict(IndexManifest.read(directory).to_dict() | fields,
                                   where=str(path)).write(directory).to_dict()


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of the index at ``directory`` as a dict, checked by :meth:`IndexManifest.read`."""
    return IndexManifest.read(directory).to_dict()


def directory_bytes(directory: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `target` that becomes `target` only if the block succeeds.

    One build of a target at a time: a second raises InvalidIndexError at once (an advisory lock on
    ``.NAME.lock``, released by the kernel even when a build is killed). Folders left by a killed
    build of the same target are removed first, with a warning. The old index is moved aside and the
    new one renamed into place, so a search running meanwhile finishes on the old one, and one that
    opens in between finds no index and says so; neither reads a half-written one.
    """
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):
        leftovers = sorted([*target.parent.glob(f".{target.name}.building-*"), *_stale_adaptations(target)])
        for leftover in leftovers:
            shutil.rmtree(leftover, ignore_errors=True)
        if leftovers:
            log.warning("removed %d unfinished build folder(s) of %s left by an interrupted build: %s", len(leftovers),
                        target, ", ".join(p.name for p in leftovers))
        if target.exists() and not overwrite:
            raise InvalidIndexError(f"{target} already exists; pass --overwrite to rebuild it")
        building = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        building.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make a finished index private to its builder
        try:
            yield building
            if target.exists():
                # Move the old index aside first so a failure here still leaves one complete index.
                old = building.with_name(building.name + ".old")
                os.replace(target, old)
                os.replace(building, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(building, target)
        finally:
            shutil.rmtree(building, ignore_errors=True)


ADAPTING = ".adapting-"  # `clsr index --adapt`'s SAE folder beside the target: .NAME.adapting-PID-XXXX


def _stale_adaptations(target: Path) -> list[Path]:
    """SAE folders of `clsr index --adapt` runs on `target` whose process is gone (killed mid-adaptation)."""
    stale = []
    for folder in target.parent.glob(f".{target.name}{ADAPTING}*"):
        pid = folder.name.rsplit(ADAPTING, 1)[1].split("-", 1)[0]
        if not pid.isdigit() or not _process_alive(int(pid)):
            stale.append(folder)
    return stale


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside `target` for one build; raise InvalidIndexError if another build holds it.

    The file is removed when the build ends. A build that opened it just before must then not build
    on the removed file, so a lock counts only while the file at the path is the one locked.
    """
    import fcntl

    path = target.parent / f".{target.name}.lock"
    while True:
        lock = open(path, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown pid"
            lock.close()
            raise InvalidIndexError(f"another build of {target} is running ({holder}); wait for it to finish") from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (os.fstat(lock.fileno()).st_dev,
                                                                       os.fstat(lock.fileno()).st_ino):
            break
        lock.close()  # removed by the build that just finished: lock the new file instead
    try:
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        lock.close()


def _write_json_collection(documents: Iterable[Document], directory: Path) -> int:
    count = 0
    with open(directory / "docs.jsonl", "w", encoding="utf-8") as f:
        for doc in documents:
            f.write(json.dumps({"id": doc.id, "contents": doc.text}) + "\n")
            count += 1
    return count


def run_anserini_indexer(args: Sequence[str]) -> None:
    """Anserini's IndexCollection in this process's JVM (what `python -m pyserini.index.lucene` runs)."""
    from ..jvm import java_class, java_path

    # Anserini logs every setting at INFO; keep that for `clsr -v` only (which lowers the root logger to INFO;
    # clsr's own logger is at INFO always).
    quiet = [] if logging.getLogger().isEnabledFor(logging.INFO) else ["-quiet"]
    args = [java_path(a) if previous in ("-input", "-index") else a for previous, a in zip(["", *args], args)]
    java_class("io.anserini.index.IndexCollection").main([*args, *quiet])


def build_bm25_index(documents: Iterable[Document], index_dir: str | os.PathLike, *, source: str = "",
                     threads: int = 1, overwrite: bool = False) -> dict:
    """A Lucene BM25 index with no positions, doc vectors or raw text (smallest and fastest)."""
    with atomic_directory(index_dir, overwrite) as building, tempfile.TemporaryDirectory() as collection:
        count = _write_json_collection(documents, Path(collection))
        start = time.perf_counter()
        run_anserini_indexer(["-collection", "JsonCollection", "-input", collection, "-index", str(building),
                              "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads)])
        seconds = time.perf_counter() - start
        return write_manifest(building, "bm25", count, source=source, k1=BM25_K1, b=BM25_B,
                              build_seconds=round(seconds, 3))


def build_dense_index(ids: Sequence[str], embeddings: np.ndarray, index_dir: str | os.PathLike, *,
                      encoder: dict, source: str = "", overwrite: bool = False, encoding: dict | None = None) -> dict:
    """A flat index: float32 embeddings.npy plus ids.txt, searched exactly by inner product.

    ``encoding`` is the encoder's backend and dtype (:attr:`clsr.dense.DenseEncoder.encoding`),
    recorded so that searchers encode queries the way the documents were encoded.
    """
    if len(ids) != len(embeddings):
        raise InvalidIndexError(f"{len(ids)} ids but {len(embeddings)} embeddings")
    with atomic_directory(index_dir, overwrite) as building:
        np.save(building / "embeddings.npy", np.ascontiguousarray(embeddings, dtype=np.float32))
        (building / "ids.txt").write_text("\n".join(ids), encoding="utf-8")
        return write_manifest(building, "dense", len(ids), source=source, dim=int(embeddings.shape[1]),
                              encoder=encoder, encoding=encoding)


DOC_CODES_DIR = "doc_codes"
DOCUMENTS_PER_SHARD = 500_000


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


def _write_vector_shards(latents: np.ndarray, impacts: np.ndarray, ids: Sequence[str], directory: Path,
                         shards: int, progress: bool) -> int:
    """JsonVectorCollection files ({"id", "contents", "vector"}); returns the number of postings."""
    postings = 0
    bounds = np.linspace(0, len(ids), shards + 1).astype(int)
    with progress_bar(total=len(ids), desc="writing concept vectors", unit="doc", enabled=progress) as bar:
        for shard, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
            with open(directory / f"vectors-{shard:05d}.jsonl", "w", encoding="utf-8") as f:
                for row in range(start, stop):
                    vector = {concept_term(int(latent)): int(impact)
                              for latent, impact in zip(latents[row], impacts[row]) if impact > 0}
                    postings += len(vector)
                    f.write(json.dumps({"id": ids[row], "contents": "", "vector": vector}) + "\n")
                bar.update(stop - start)
    return postings


def index_impact_vectors(latents: np.ndarray, impacts: np.ndarray, ids: Sequence[str], lucene_dir: Path, *,
                         threads: int = 1, progress: bool = True) -> tuple[int, dict[str, float]]:
    """Lucene impact index of (latent, integer impact) rows, via a JsonVectorCollection and Anserini.

    Returns the number of postings and the seconds spent writing the collection and indexing it.
    """
    with tempfile.TemporaryDirectory() as collection:
        start = time.perf_counter()
        shards = max(threads, -(-len(ids) // DOCUMENTS_PER_SHARD))  # one file per thread at least
        postings = _write_vector_shards(latents, impacts, ids, Path(collection), shards, progress)
        write_s = time.perf_counter() - start
        if progress:
            print(f"indexing {len(ids)} documents with Lucene ({threads} thread{'s' * (threads > 1)})")
        start = time.perf_counter()
        run_anserini_indexer(["-collection", "JsonVectorCollection", "-input", collection, "-index", str(lucene_dir),
                              "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized",
                              "-threads", str(threads), "-optimize"])  # -optimize: one segment, faster search
        return postings, {"write_s": write_s, "lucene_s": time.perf_counter() - start}


def build_concept_index(ids: Sequence[str], embeddings: np.ndarray, index_dir: str | os.PathLike, *, sae,
                        sae_path: str | os.PathLike, encoder: dict, doc_k: int | None = None,
                        query_k: int | None = None, query_mode: str = "topk", bits: int = 8, source: str = "",
                        threads: int = 1, overwrite: bool = False, progress: bool = True,
                        embed_sae: bool = False, codes: tuple[np.ndarray, np.ndarray] | None = None,
                        encoding: dict | None = None) -> dict:
    """A Lucene impact index of the documents' top-``doc_k`` SAE concepts, plus ``doc_codes/``.

    ``embeddings`` are the documents' dense vectors from ``encoder``; the SAE must have been
    trained on that encoder. ``query_k``/``query_mode`` are the defaults searchers will use.
    ``encoding`` (backend and dtype) is recorded as for :func:`build_dense_index`.
    ``embed_sae`` copies the SAE into the index's ``sae/`` (an adapted SAE belongs to its index).
    The SAE's fit to the corpus is measured (`check_sae_fit`) and recorded as ``sae_fit``.
    ``codes`` are the documents' top-``doc_k`` (activations, latents) when already computed with
    this SAE, e.g. by the Ray actors (``clsr.ray_encoding``); otherwise they are computed here.
    """
    from ..sae import CONFIG_NAME, WEIGHTS_NAME, sae_checksum

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
    with atomic_directory(index_dir, overwrite) as building:
        sae_record = {"name": Path(sae_path).name, "path": str(Path(sae_path).resolve())}
        if embed_sae:
            (building / EMBEDDED_SAE_DIR).mkdir()
            for name in (CONFIG_NAME, WEIGHTS_NAME):
                shutil.copy2(Path(sae_path) / name, building / EMBEDDED_SAE_DIR / name)
            sae_record = {"name": EMBEDDED_SAE_DIR, "path": EMBEDDED_SAE_DIR}  # relative: the index can move
        start = time.perf_counter()
        if codes is not None:
            activations, latents = np.asarray(codes[0], np.float32), np.asarray(codes[1], np.int32)
            if activations.shape != (len(ids), doc_k) or latents.shape != activations.shape:
                raise InvalidIndexError(f"codes of shape {activations.shape}, expected {(len(ids), doc_k)}")
        else:
            activations = np.zeros((len(ids), doc_k), np.float32)
            latents = np.zeros((len(ids), doc_k), np.int32)
            batch = 8192
            for first in progress_bar(range(0, len(ids), batch), desc="encoding concepts", unit="batch",
                                      enabled=progress):
                activations[first:first + batch], latents[first:first + batch] = sae.encode_numpy(
                    embeddings[first:first + batch], doc_k)
        doc_quantizer = Quantizer.fit(activations, bits)
        impacts = doc_quantizer.quantize(activations)
        timings["concepts_s"] = time.perf_counter() - start

        postings, seconds = index_impact_vectors(latents, impacts, ids, building, threads=threads, progress=progress)
        timings.update(seconds)
        lucene_bytes = directory_bytes(building)

        start = time.perf_counter()
        store = building / DOC_CODES_DIR
        store.mkdir()
        (store / "ids.txt").write_text("\n".join(ids), encoding="utf-8")
        np.save(store / "latents.npy", latents.astype(np.uint16 if sae.config.n_latents <= 2**16 else np.int32))
        np.save(store / "activations.npy", activations)
        np.save(store / "reconstructed.npy", sae.decode_numpy(activations, latents))
        timings["doc_codes_s"] = time.perf_counter() - start

        return write_manifest(
            building, "concepts", len(ids), source=source, encoder=encoder, encoding=encoding,
            sae={**sae_record, "sha256": sae_checksum(sae_path), "n_latents": sae.config.n_latents,
                 "k": sae.config.k, "d_in": sae.config.d_in, "adapted_from": (sae.config.training.get("adaptation")
                                                                              or {}).get("base_sae")},
            sae_fit=sae_fit,
            doc_k=doc_k, doc_quantizer=doc_quantizer.to_dict(),
            query={"k": query_k, "mode": query_mode, "quantizer": query_quantizer.to_dict()},
            postings=postings, empty_documents=int((impacts.max(axis=1) == 0).sum()),
            lucene_bytes=lucene_bytes, doc_codes_bytes=directory_bytes(store),
            timings={name: round(seconds, 3) for name, seconds in timings.items()})


def _recorded_sae_path(index_dir: str | os.PathLike, recorded: dict) -> Path:
    from ..sae import DEFAULT_SAE, WEIGHTS_NAME, default_sae_path

    candidates = [Path(index_dir) / recorded["path"]]  # a relative path is an SAE kept inside the index
    if recorded["name"] == DEFAULT_SAE and default_sae_path() is not None:
        candidates.append(default_sae_path())  # the bundled SAE, wherever this clsr is installed
    for candidate in candidates:
        if (candidate / WEIGHTS_NAME).exists():
            return candidate
    raise InvalidIndexError(f"{index_dir} was built with the SAE at {recorded['path']}, which is not there; "
                            "pass its folder with --sae")


def load_concept_encoder(index_dir: str | os.PathLike, *, encoder: EncoderConfig | None = None,
                         sae_path: str | os.PathLike | None = None, query_k: int | None = None,
                         query_mode: str | None = None, force: bool = False, device: str = "cpu",
                         dtype: str = "auto", batch_size: int = 32, backend: str | None = None,
                         manifest: dict | None = None, where: str | None = None):
    """The ConceptEncoder a concept index was built with, checked against the manifest.

    ``encoder`` and ``sae_path`` default to the index's own; given ones that differ from the
    manifest are refused (naming both sides) unless ``force``. ``query_k``/``query_mode`` override
    the index's query defaults. ``backend`` defaults to the index's (:func:`clsr.dense.recorded_backend`),
    so queries get the numerics the documents got. ``manifest`` (with ``where`` naming it in errors) is
    the index's manifest kept elsewhere, e.g. in a Milvus collection; ``index_dir`` then only locates an
    SAE recorded relative to the index.
    """
    from ..concepts import ConceptEncoder
    from ..dense import DenseEncoder, EncoderConfig, recorded_backend
    from ..sae import SaeMismatchError, TopKSae, sae_checksum

    manifest = manifest if manifest is not None else read_manifest(index_dir)
    where = where or f"index {index_dir}"
    if manifest["kind"] != "concepts":
        raise InvalidIndexError(f"{index_dir} is a {manifest['kind']} index, not a concept index")
    indexed_with = EncoderConfig.from_dict(manifest["encoder"])
    if encoder is not None and encoder != indexed_with and not force:
        raise InvalidIndexError(f"the query encoder does not match the index (pass --force to search anyway).\n"
                                f"  {where}: {indexed_with}\n  query encoder: {encoder}")
    recorded = manifest["sae"]
    sae_path = Path(sae_path) if sae_path is not None else _recorded_sae_path(index_dir, recorded)
    checksum = sae_checksum(sae_path)
    if checksum != recorded["sha256"] and not force:
        raise SaeMismatchError(
            "the SAE does not match the index (pass --force to search anyway).\n"
            f"  {where}: SAE {recorded['name']} ({recorded['n_latents']} latents, k={recorded['k']}), "
            f"sha256 {recorded['sha256'][:16]}\n  given {sae_path}: sha256 {checksum[:16]}")
    sae = TopKSae.load_from_disk(sae_path, device=device)
    query = manifest["query"]
    dense = DenseEncoder(encoder or indexed_with, device=device, dtype=dtype, batch_size=batch_size,
                         backend=backend or recorded_backend(manifest))
    return ConceptEncoder(dense, sae, doc_k=manifest["doc_k"], query_k=query_k or query["k"],
                          query_mode=query_mode or query["mode"],
                          doc_quantizer=Quantizer.from_dict(manifest["doc_quantizer"]),
                          query_quantizer=Quantizer.from_dict(query["quantizer"]))


def concept_encoder_options(args, manifest: dict) -> dict:
    """Keyword options for `load_concept_encoder` (and so ClsrSearcher, ClsrQueryEncoder) from the flags of
    `clsr.options.add_concept_query_options` and `add_encoder_options`."""
    from ..dense import EncoderConfig, encoder_config_from_args, encoder_overridden

    encoder = (encoder_config_from_args(args, EncoderConfig.from_dict(manifest["encoder"]))
               if encoder_overridden(args) else None)
    return {"encoder": encoder, "sae_path": args.sae, "query_k": args.query_k, "query_mode": args.query_mode,
            "force": args.force, "device": args.device, "dtype": args.dtype, "batch_size": args.encode_batch_size,
            "backend": args.encoder_backend if args.encoder_backend != "auto" else None}


def encoding_summary(encoder, encoded) -> str:
    """What a build says of its encoding: the rate, backend, dtype and kind of CPU, or that the cache served it."""
    from ..dense import describe_rate

    if encoded.cached:
        return (f"{len(encoded.ids)} embeddings from the cache (encoded earlier at {encoded.docs_per_s:.1f} "
                f"passages/s, {encoder.backend} {encoder.dtype})")
    return describe_rate(encoder, len(encoded.ids), len(encoded.ids) / max(encoded.docs_per_s, 1e-9))


EMBEDDED_SAE_DIR = "sae"
POOR_FIT_RATIO = 1.5  # corpus FVU this many times the SAE's own passage FVU: adapting pays (issue 10's table)


def check_sae_fit(sae, embeddings: np.ndarray, sample: int = 2000) -> dict:
    """Measure how well the SAE reconstructs this corpus, and warn when far worse than on its own data.

    Compares the FVU on a seeded sample of the corpus's embeddings with the SAE's FVU on its own
    training passages (``reference_fvu`` in its config; older SAEs: the last epoch's FVU). Above
    ``POOR_FIT_RATIO`` times that, logs a warning that names both and points to `clsr adapt-sae`.
    Returns ``{"fvu", "reference_fvu", "sample", "poor_fit"}``.
    """
    from ..sae_training import passage_fvu

    training = sae.config.training
    reference = training.get("reference_fvu", (training.get("final_epoch") or {}).get("fvu"))
    fvu = round(passage_fvu(sae, embeddings, sample=sample), 4)
    poor_fit = reference is not None and fvu > POOR_FIT_RATIO * reference
    if poor_fit:
        log.warning("the SAE fits this corpus poorly: FVU %.3f on %d of its passages against %.3f on the SAE's own "
                    "training passages; adapt it first (`clsr index --adapt ...`, or `clsr adapt-sae --corpus ... "
                    "--output DIR` then `--sae DIR`)", fvu, min(sample, len(embeddings)), reference)
    return {"fvu": fvu, "reference_fvu": reference, "sample": min(sample, len(embeddings)), "poor_fit": poor_fit}
