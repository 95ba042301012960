"""The embeddings folder `clsr encode` writes and `clsr index --embeddings` reads: the one place for its format.

A folder holds three files:

* ``embeddings.npy``: float32, (n, d), one row per id;
* ``ids.txt``: the n ids, one a line, in the rows' order;
* ``encoder.json``: the `EncoderConfig`'s fields (model, pooling, normalize, query_prefix, max_length) and the
  encoding record (backend, dtype: :attr:`clsr.encode.dense.DenseEncoder.encoding`), in one flat object.

Encode on a GPU machine or a Ray cluster (`clsr encode`), copy the folder, and index it elsewhere: the index's
manifest records encoder.json's encoder and encoding, so its searchers encode queries as the passages were.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from clsr.errors import UsageError

if TYPE_CHECKING:
    from clsr.sae.model import TopKSae

EMBEDDINGS_FILE = "embeddings.npy"
IDS_FILE = "ids.txt"
ENCODER_FILE = "encoder.json"
ENCODING_KEYS = ("backend", "dtype")


class GivenEmbeddings(NamedTuple):
    """An embeddings folder, read and checked by :func:`read_embeddings`."""

    ids: list[str]
    embeddings: np.ndarray  # (len(ids), d) float32, memory-mapped unless reordered (`in_order`)
    encoder: dict  # EncoderConfig.to_dict()
    encoding: dict  # {"backend": ..., "dtype": ...}
    folder: Path

    def check_sae(self, sae: TopKSae) -> None:
        """Refuse embeddings ``sae`` cannot code: raises SaeMismatchError, in one line naming both sides, when
        encoder.json records another encoder than the SAE was trained on, or the rows are not the SAE's dimension."""
        from clsr.sae.model import SaeMismatchError

        try:
            sae.check_encoder(self.encoder)
        except SaeMismatchError as e:
            raise SaeMismatchError(f"{self.folder / ENCODER_FILE}: {e}") from None
        sae.check_dim(self.embeddings.shape[1], f"the embeddings in {self.folder / EMBEDDINGS_FILE}")

    def in_order(self, ids: Sequence[str], scratch: str | os.PathLike | None = None,
                 chunk_rows: int | None = None) -> GivenEmbeddings:
        """These embeddings with one row per id of ``ids`` (a corpus's, in its order): the same record (its memory
        map, nothing copied) when the order is already ``ids``', else its rows reordered: into
        ``scratch/embeddings.npy``, memory-mapped, ``chunk_rows`` rows at a time when a ``scratch`` folder is given
        (the caller removes it after use; ``chunk_rows`` defaults to `clsr.index.streaming.CHUNK_ROWS`), else into a
        copy in memory.

        Raises UsageError, in one line, when the ids differ as a set: how many of ``ids`` have no row, and how
        many of the folder's are not in ``ids``, with the first few of each.
        """
        if len(self.ids) == len(ids) and all(a == b for a, b in zip(self.ids, ids)):
            return self
        row = {docid: number for number, docid in enumerate(self.ids)}
        missing = [docid for docid in ids if docid not in row]
        wanted = set(ids)
        extra = [docid for docid in self.ids if docid not in wanted]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{_count(missing, 'corpus passage')} missing from {IDS_FILE} ({_first(missing)})")
            if extra:
                parts.append(f"{_count(extra, 'id')} in {IDS_FILE} not in the corpus ({_first(extra)})")
            raise UsageError(f"the embeddings in {self.folder} are not the corpus's: " + "; ".join(parts))
        del wanted
        order = np.fromiter((row[docid] for docid in ids), dtype=np.int64, count=len(ids))
        del row
        if scratch is None:
            return self._replace(ids=list(ids), embeddings=np.asarray(self.embeddings[order]))
        from clsr.index.streaming import CHUNK_ROWS, open_npy, release, row_chunks

        target = Path(scratch) / EMBEDDINGS_FILE
        reordered = open_npy(target, np.float32, (len(ids), self.embeddings.shape[1]))
        for start, stop in row_chunks(len(ids), chunk_rows or CHUNK_ROWS):
            # Gathered rows scatter over the whole file: all its pages are handed back after each chunk.
            reordered[start:stop] = self.embeddings[order[start:stop]]
            release(self.embeddings)
            release(reordered, start, stop)
        reordered.flush()
        del reordered
        return self._replace(ids=list(ids), embeddings=np.load(target, mmap_mode="r"))


def read_embeddings(folder: str | os.PathLike) -> GivenEmbeddings:
    """The embeddings folder at ``folder`` (:data:`EMBEDDINGS_FILE` memory-mapped), checked against itself.

    Raises UsageError, in one line naming the file, for a folder or file that is missing, an ``embeddings.npy``
    that is not a 2-d float32 array, a row count other than ``ids.txt``'s number of ids, an id listed twice, or an
    ``encoder.json`` that lacks an encoder setting, the backend or the dtype.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--embeddings {folder}: no such folder (give one `clsr encode --output` wrote)")
    for name in (EMBEDDINGS_FILE, IDS_FILE, ENCODER_FILE):
        if not (folder / name).is_file():
            raise UsageError(f"{folder} has no {name}: an embeddings folder holds {EMBEDDINGS_FILE}, {IDS_FILE} "
                             f"and {ENCODER_FILE}, as `clsr encode --output` writes them")
    path = folder / EMBEDDINGS_FILE
    try:
        embeddings = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise UsageError(f"{path} is not a NumPy array file ({e})") from None
    if embeddings.ndim != 2 or embeddings.dtype != np.float32:
        raise UsageError(f"{path} holds a {embeddings.dtype} array of shape {embeddings.shape}; "
                         "expected float32 (passages x dimension)")
    text = (folder / IDS_FILE).read_text(encoding="utf-8")
    ids = text.removesuffix("\n").split("\n") if text else []
    if len(ids) != len(embeddings):
        raise UsageError(f"{path} has {len(embeddings)} rows but {folder / IDS_FILE} has {len(ids)} ids: "
                         "one row per id, in the same order")
    repeated = [docid for docid, count in Counter(ids).items() if count > 1]
    if repeated:
        raise UsageError(f"{folder / IDS_FILE} lists {_count(repeated, 'id')} more than once ({_first(repeated)})")
    encoder, encoding = _read_encoder(folder / ENCODER_FILE)
    return GivenEmbeddings(ids, embeddings, encoder, encoding, folder)


def write_embeddings(folder: str | os.PathLike, ids: Sequence[str], embeddings: np.ndarray | str | os.PathLike,
                     encoder: dict, encoding: dict) -> None:
    """Write an embeddings folder that :func:`read_embeddings` reads: ``embeddings`` (n, d) float32 for the n
    ``ids``, or the path of a ``.npy`` file holding them, moved into ``folder`` (no copy); ``encoder`` is an
    `EncoderConfig` dict, ``encoding`` its backend and dtype. Other files in ``folder`` are left alone."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(embeddings, np.ndarray):
        np.save(folder / EMBEDDINGS_FILE, np.asarray(embeddings, dtype=np.float32))
    else:
        os.replace(embeddings, folder / EMBEDDINGS_FILE)
    (folder / IDS_FILE).write_text("\n".join(ids), encoding="utf-8")
    (folder / ENCODER_FILE).write_text(json.dumps({**encoder, **encoding}, indent=2))


def _read_encoder(path: Path) -> tuple[dict, dict]:
    """(the EncoderConfig dict, the encoding) that an ``encoder.json`` records; UsageError when one is missing."""
    from clsr.encode.dense import EncoderConfig

    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UsageError(f"{path} is not JSON ({e})") from None
    fields = [field.name for field in dataclasses.fields(EncoderConfig)]
    lacking = [key for key in (*fields, *ENCODING_KEYS) if not isinstance(values, dict) or key not in values]
    if lacking:
        raise UsageError(f"{path} lacks {', '.join(lacking)}: it records the encoder's settings and its backend "
                         "and dtype, as `clsr encode` writes them")
    try:
        encoder = EncoderConfig.from_dict(values).to_dict()
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from None
    return encoder, {key: values[key] for key in ENCODING_KEYS}


def _count(items: Sequence[str], noun: str) -> str:
    return f"{len(items)} {noun}{'s' * (len(items) != 1)}"


def _first(items: Sequence[str], shown: int = 3) -> str:
    return ", ".join(map(repr, items[:shown])) + (f" and {len(items) - shown} more" if len(items) > shown else "")
