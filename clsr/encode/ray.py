"""Corpus encoding on Ray (``clsr encode --ray``, ``clsr index --ray``): local mode here, a cluster by address.

The corpus is read as a Ray Dataset (a JSONL or TSV file line by line, ``ray.data.read_text``, so
the cluster's workers read it; other sources, e.g. ir_datasets ids, are read by the driver and handed to Ray).
``map_batches`` runs the dense encoder, and the SAE when one is given, over a pool of actors, each
of which loads its models once. The driver streams the results, in corpus order, into shards of
``SHARD_ROWS`` passages (``shard-00000/``: ``ids.txt``, ``embeddings.npy`` (n, d) float32, and with
an SAE ``latents.npy`` (n, doc K) int32 and ``activations.npy`` (n, doc K) float32), so no process
holds all the embeddings while encoding. ``read_shards`` gives them back as one memory-mapped array each, which
``clsr.index.build_concept_index`` reads.

On a cluster, every node needs clsr installed (or a ``runtime_env``) and the corpus file at the same
path; the shards are written where the driver runs. Ray is optional: ``pip install 'clsr[ray]'``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clsr.errors import ClsrError

SHARD_ROWS = 100_000
SHARDS_META = "shards.json"
LOCAL = "local"  # `--ray` with no address: a local Ray instance in this process's machine


class RayUnavailableError(ClsrError, RuntimeError):
    """Ray is not installed or could not start."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError("encoding on Ray needs Ray Data: pip install 'clsr[ray]'") from None
    return ray


def start_ray(address: str | None = LOCAL) -> float:
    """Connect to the cluster at ``address`` (or start a local one for ``local``/None); returns seconds taken."""
    ray = _ray()
    start = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=None if address in (None, LOCAL) else address, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    return time.perf_counter() - start


def corpus_dataset(source: str):
    """The corpus as a Ray Dataset of {"id", "text"} rows, in corpus order.

    A plain JSONL or TSV file is read by Ray's workers; a compressed one (which Ray's text reader does not
    decompress by its content) is read by the driver through clsr.data, as other sources are.
    """
    from clsr.data import Document, beir_file, compression, iter_corpus, resolve

    ray = _ray()
    where = resolve(source)
    if isinstance(where, Path):
        path = beir_file(where, "corpus.jsonl") if where.is_dir() else where
    if isinstance(where, Path) and compression(path) is None:
        # Reading takes no CPU slot: with one actor per CPU, a read waiting for a slot would deadlock.
        lines = ray.data.read_text(str(path), ray_remote_args={"num_cpus": 0})
        return lines.map_batches(_parse_lines, fn_kwargs={"path": str(path)}, batch_format="numpy")
    documents: Iterator[Document] = iter_corpus(source)
    return ray.data.from_items([{"id": d.id, "text": d.text} for d in documents])


def _parse_lines(batch: dict, path: str) -> dict:
    """Raw corpus lines to {"id", "text"}: JSONL through clsr.data's own record rule, or id<TAB>text.

    Ray splits the file at LF only; a bare CR also ends a line, as in clsr.data.text_lines, so a row is
    split again there (and a CRLF's CR dropped).
    """
    from clsr.data import DataError, check_id, format_suffix, json_record, record_document

    ids, texts = [], []
    rows = (line for row in batch["text"] for line in str(row).rstrip("\r").split("\r"))
    for line in rows:
        line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        if format_suffix(path) == ".tsv":
            doc_id, tab, text = line.partition("\t")
            if not tab:
                raise DataError(f"{path}: expected 'id<TAB>text', got {line[:80]!r}")
            check_id(doc_id, "document", path)
        else:
            # A worker sees no line numbers; first=True, as a JSON Lines line never starts with "[" anyway,
            # so a JSON array in the file's place is named as such wherever its lines land.
            record = json_record(line, f"{path} (line {line[:60]!r})", first=True, path=path)
            document = record_document(Path(path), 0, record)
            doc_id, text = document.id, document.text
        ids.append(doc_id)
        texts.append(text)
    return {"id": np.array(ids, dtype=object), "text": np.array(texts, dtype=object)}


class CorpusEncoder:
    """A Ray actor: loads the dense encoder (and SAE) once, then encodes batches of {"id", "text"}."""

    def __init__(self, encoder: dict, backend: str = "torch", dtype: str = "fp32", batch_size: int | None = None,
                 sae_path: str | None = None, doc_k: int | None = None, torch_threads: int = 1):
        import torch

        from clsr.encode.dense import DenseEncoder, EncoderConfig
        from clsr.sae.model import TopKSae

        torch.set_num_threads(torch_threads)
        self.dense = DenseEncoder(EncoderConfig.from_dict(encoder), backend=backend, dtype=dtype,
                                  batch_size=batch_size, threads=torch_threads)
        self.sae = TopKSae.load_from_disk(sae_path) if sae_path else None
        self.doc_k = doc_k

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        embeddings = self.dense.encode_documents(texts)
        out = {"id": batch["id"], "embedding": embeddings}
        if self.sae is not None:
            out["activations"], out["latents"] = self.sae.encode_numpy(embeddings, self.doc_k)
        return out


@dataclass(frozen=True)
class Shards:
    """Encoded shards read back as one memory-mapped array per field, in corpus order."""

    ids: list[str]
    embeddings: np.ndarray  # (n, d) float32
    activations: np.ndarray | None  # (n, doc K) float32, when an SAE ran
    latents: np.ndarray | None  # (n, doc K) int32
    meta: dict


def encode_with_ray(source: str, encoder: dict, output: str | os.PathLike, *, isolate: bool = True,
                    **options) -> dict:
    """Encode a corpus on Ray into shards under ``output``; returns the shards' metadata.

    ``encoder`` is an ``EncoderConfig`` dict. Options: ``address`` (default local), ``workers``
    actors (default: one per CPU of the cluster), each encoding ``rows_per_batch`` passages at a
    time, ``batch_size`` per forward pass (default: the backend's), with one thread; ``backend``
    and ``dtype`` (resolved, as :func:`clsr.encode.dense.resolve_encoding` gives them); with ``sae_path`` the
    actors also compute each passage's top-``doc_k`` code; ``shard_rows``; ``progress``. The output
    folder is written afresh (a partial one from an interrupted run is replaced) and
    ``shards.json`` is written last, so a folder with it is complete.

    ``isolate`` (default) runs the Ray driver in a child process: Ray installs SIGSEGV handlers
    over the JVM's, and a JVM in the same process (Lucene, for the index build that follows) then
    crashes on its own deliberate faults (seen as a segfault in Anserini's indexer).

    Since the output is replaced, it is refused first (UnsafeOutputError) as
    `clsr.index.atomic.check_replaceable` says: the working folder or a parent of it, the corpus or the SAE
    (or a folder containing or inside one), or a folder that is not earlier shards or holds other files.
    """
    from clsr.index.atomic import SHARDS, check_replaceable

    check_replaceable(output, SHARDS, {"the corpus": source, "the SAE": options.get("sae_path")}, option="--shards")
    _ray()  # fail here, in one line, when the extra is missing
    if not isolate:
        return _encode_with_ray(source, encoder, output, **options)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(_encode_with_ray, source, encoder, output, **options).result()


def _encode_with_ray(source: str, encoder: dict, output: str | os.PathLike, *, address: str | None = LOCAL,
                     workers: int | None = None, backend: str = "torch", dtype: str = "fp32",
                     batch_size: int | None = None, rows_per_batch: int = 256,
                     sae_path: str | os.PathLike | None = None, doc_k: int | None = None,
                     shard_rows: int = SHARD_ROWS, progress: bool = True) -> dict:
    ray = _ray()
    output = Path(output)
    startup_s = start_ray(address)
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards in corpus order: the index is the same
    context.enable_progress_bars = progress
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    start = time.perf_counter()
    encoded = corpus_dataset(source).map_batches(
        CorpusEncoder, batch_size=rows_per_batch, batch_format="numpy", concurrency=workers, num_cpus=1,
        fn_constructor_kwargs={"encoder": encoder, "backend": backend, "dtype": dtype, "batch_size": batch_size,
                               "sae_path": str(sae_path) if sae_path else None, "doc_k": doc_k})
    shard, rows = 0, 0
    for batch in encoded.iter_batches(batch_size=shard_rows, batch_format="numpy"):
        _write_shard(output / f"shard-{shard:05d}", batch)
        shard, rows = shard + 1, rows + len(batch["id"])
    seconds = time.perf_counter() - start
    meta = {"documents": rows, "shards": shard, "encoder": encoder, "encoding": {"backend": backend, "dtype": dtype},
            "sae": str(Path(sae_path).resolve()) if sae_path else None, "doc_k": doc_k, "workers": workers,
            "address": address or LOCAL, "ray_start_s": round(startup_s, 3), "encode_s": round(seconds, 3),
            "docs_per_s": round(rows / max(seconds, 1e-9), 2), "source": source}
    (output / SHARDS_META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _write_shard(directory: Path, batch: dict) -> None:
    directory.mkdir()
    (directory / "ids.txt").write_text("\n".join(map(str, batch["id"])), encoding="utf-8")
    np.save(directory / "embeddings.npy", np.asarray(batch["embedding"], np.float32))
    if "latents" in batch:
        np.save(directory / "latents.npy", np.asarray(batch["latents"], np.int32))
        np.save(directory / "activations.npy", np.asarray(batch["activations"], np.float32))


def read_shards(directory: str | os.PathLike) -> Shards:
    """The shards under ``directory`` as memory-mapped arrays (concatenated once into ``all-*.npy``)."""
    directory = Path(directory)
    if not (directory / SHARDS_META).exists():
        raise FileNotFoundError(f"{directory} holds no complete set of encoded shards (no {SHARDS_META}); "
                                "encode again with --ray")
    meta = json.loads((directory / SHARDS_META).read_text())
    parts = sorted(directory.glob("shard-*"))
    ids = [docid for part in parts for docid in (part / "ids.txt").read_text(encoding="utf-8").split("\n")]
    if len(ids) != meta["documents"]:
        raise FileNotFoundError(f"{directory}: the shards hold {len(ids)} ids, {SHARDS_META} says {meta['documents']}")

    def joined(name: str) -> np.ndarray | None:
        if not parts or not (parts[0] / f"{name}.npy").exists():
            return None
        target = directory / f"all-{name}.npy"
        if not target.exists():
            arrays = [np.load(part / f"{name}.npy", mmap_mode="r") for part in parts]
            tmp = directory / f".all-{name}.npy"
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=arrays[0].dtype,
                                            shape=(sum(len(a) for a in arrays), *arrays[0].shape[1:]))
            row = 0
            for array in arrays:  # one shard in memory at a time
                out[row:row + len(array)] = array
                row += len(array)
            out.flush()
            del out
            os.replace(tmp, target)
        return np.load(target, mmap_mode="r")

    return Shards(ids, joined("embeddings"), joined("activations"), joined("latents"), meta)


