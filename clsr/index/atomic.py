"""Atomic index builds: a build is written into a hidden sibling folder and renamed into place only when
complete, under an advisory lock, so an interrupted build never leaves a folder that looks like an index.

`check_replaceable` is the one rule for every output a command writes where the user says (``--index``,
``--output``, ``--shards``, ...): clsr never replaces the working folder or a parent of it, a source of the same
command, a folder that is not an earlier output of the same kind (`OutputKind`), or files it did not write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from clsr.errors import InvalidIndexError, UsageError

log = logging.getLogger("clsr.index")


def directory_bytes(directory: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


class UnsafeOutputError(UsageError):
    """An output that clsr will not write or replace: the working folder or a parent of it, a source of the same
    command, a folder that is not an earlier output of the same kind, or one holding files clsr did not write."""


@dataclass(frozen=True)
class OutputKind:
    """What a command writes where the user says, and how an earlier one is recognised.

    ``markers``: sets of names, one of which an earlier output holds in full (``clsr-index.json`` for an index).
    ``owned``: the names of the entries (at the top of the folder) that clsr writes there; any other entry is the
    user's, and an output holding one is never replaced. ``listed_in``: a JSON file of the output whose
    ``"files"`` list names the entries written (where the names vary, as a sentence-transformers folder's do);
    ``owned`` then serves for outputs written before the list was. ``is_file``: the output is one file.
    """

    what: str
    markers: tuple[frozenset[str], ...] = ()
    owned: re.Pattern | None = None
    listed_in: str | None = None
    is_file: bool = False
    redo: str = "replace"  # the verb of "pass --overwrite to ... it"

    def recognises(self, names: list[str]) -> bool:
        """Whether a folder holding `names` is an earlier output of this kind (it holds a full marker set)."""
        return any(marker <= set(names) for marker in self.markers)

    def foreign_entries(self, folder: Path, names: list[str]) -> list[str]:
        """The entries of `folder` (named `names`) that clsr did not write there, sorted."""
        listed = _listed_files(folder / self.listed_in) if self.listed_in else None
        if listed is not None:
            return sorted(name for name in names if name not in listed and name != self.listed_in)
        return sorted(name for name in names if not (self.owned and self.owned.fullmatch(name)))


def _listed_files(path: Path) -> set[str] | None:
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return set(files) if isinstance(files, list) else None


# Lucene's own files: _N.EXT and _N_Codec_M.EXT (N in base 36), segments_N (and segments.gen, pending_segments_N),
# write.lock. Any lower-case extension: each Lucene version's codecs add their own (Lucene 10, Pyserini 2.x: .dvs).
_LUCENE = (r"_[0-9a-z]+(?:_[0-9A-Za-z]+)*\.[a-z]+|segments(?:_[0-9a-z]+|\.gen)|"
           r"pending_segments_[0-9a-z]+|write\.lock")

INDEX = OutputKind(
    "a clsr index", markers=(frozenset({"clsr-index.json"}),), redo="rebuild",
    # The manifest (and its temporary file), Lucene's files, doc_codes/, an embedded sae/, engines/, the concept
    # catalogue (and its temporary file), a dense index's embeddings.npy and ids.txt.
    # Described on first use (clsr.index.derived): the catalogue's lock and a killed build's leftover.
    owned=re.compile(rf"{_LUCENE}|clsr-index\.json|\.clsr-index\.json\.tmp-.*|doc_codes|sae|engines|concepts\.jsonl|"
                     r"\.concepts\.jsonl\.(?:writing|lock|building-.*|damaged-\d+)|embeddings\.npy|ids\.txt"))
SAE = OutputKind(
    "an SAE folder (config.json and sae.safetensors)",
    # An SAE, or a `clsr train-sae` that stopped before its first save (its checkpoint only).
    markers=(frozenset({"config.json", "sae.safetensors"}), frozenset({"checkpoint"})),
    owned=re.compile(r"config\.json|sae\.safetensors|concepts\.jsonl|\.concepts\.jsonl\.writing|"
                     r"checkpoint|checkpoint\.tmp"))
SENTENCE_TRANSFORMERS = OutputKind(
    "a clsr sentence-transformers export (clsr_export.json)", markers=(frozenset({"clsr_export.json"}),),
    listed_in="clsr_export.json",
    # An export written before clsr_export.json listed its files: what a SparseEncoder's save writes.
    owned=re.compile(r"clsr_export\.json|README\.md|modules\.json|config[\w.-]*\.json|[\w.-]*\.safetensors|"
                     r"tokenizer[\w.-]*|vocab\.txt|merges\.txt|special_tokens_map\.json|added_tokens\.json|"
                     r"sentence_bert_config\.json|[\w.-]*\.model|\d+_\w+"))
EMBEDDINGS = OutputKind(
    "a clsr encode folder (embeddings.npy and ids.txt)", markers=(frozenset({"embeddings.npy", "ids.txt"}),),
    owned=re.compile(r"embeddings\.npy|ids\.txt|encoder\.json|shards"))
SHARDS = OutputKind(
    "a folder of Ray-encoded shards (shards.json, shard-NNNNN/)",
    # A complete set, or the shards of an interrupted encoding (no shards.json yet).
    markers=(frozenset({"shards.json"}), frozenset({"shard-00000"})),
    owned=re.compile(r"shards\.json|shard-\d+|\.?all-\w+\.npy"))
FILE = OutputKind("a file", is_file=True)


def check_replaceable(target: str | os.PathLike, kind: OutputKind,
                      sources: Mapping[str, str | os.PathLike | None] | None = None, *,
                      option: str = "--output", replaces: bool = True) -> Path:
    """`target` (resolved, symlinks followed) if a command may write `kind` there; else UnsafeOutputError.

    Refused, in one line naming the path and why, wherever the target does not exist yet or does:
    the working folder or a parent of it; a source of the same command (`sources`: what each is, e.g.
    "the index being exported", -> its path; None or a path that does not exist is skipped), or a path that
    contains one or lies inside one (for a folder output; a file output may not be a source file).
    Where it exists: a folder in a file output's place, a file in a folder output's place, a non-empty folder
    that is not an earlier output of `kind` (`OutputKind.markers`), and, when the command `replaces` the folder
    (deletes what is there; False for one that writes its own files into it), a folder holding entries clsr
    did not write there (`OutputKind.owned`). `option` names the argument in messages.
    """
    shown = f"{option} {target}"
    resolved = Path(target).resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        where = "the working folder" if resolved == cwd else f"a parent of the working folder {cwd}"
        raise UnsafeOutputError(f"{shown} is {where}: refusing to write {kind.what} there (it would replace what the "
                                "folder holds); name a new folder")
    for role, source in (sources or {}).items():
        _check_source(shown, resolved, kind, role, source)
    if not (resolved.exists() or resolved.is_symlink()):
        return resolved
    if kind.is_file:
        if resolved.is_dir():
            raise UnsafeOutputError(f"{shown} is a folder; {kind.what} is written there, never a folder replaced")
        return resolved
    if not resolved.is_dir():
        raise UnsafeOutputError(f"{shown} is a file, not a folder: refusing to replace it with {kind.what}")
    names = sorted(os.listdir(resolved))
    if not names:
        return resolved
    if not kind.recognises(names):
        raise UnsafeOutputError(f"{shown} is a folder that is not {kind.what} and is not empty ({_shown(names)}): "
                                "refusing to write into it; name a new or empty folder")
    foreign = kind.foreign_entries(resolved, names)
    if replaces and foreign:
        raise UnsafeOutputError(f"{shown} holds files clsr did not write there ({_shown(foreign)}), which replacing "
                                "it would delete; move them out first")
    return resolved


def _check_source(shown: str, resolved: Path, kind: OutputKind, role: str, source: str | os.PathLike | None) -> None:
    if source is None or str(source) == "" or not Path(source).exists():
        return
    path = Path(source).resolve()
    if resolved == path:
        raise UnsafeOutputError(f"{shown} is {role} ({path}), which this command reads: write elsewhere")
    if kind.is_file:
        return
    if resolved in path.parents:
        raise UnsafeOutputError(f"{shown} contains {role} ({path}), which this command reads: write elsewhere")
    # Inside a source: refused where the source is one of clsr's own outputs (an index, an SAE, an export), whose
    # folder would then hold what its kind does not; a corpus folder may hold an index beside its files.
    if path in resolved.parents and _is_clsr_output(path):
        raise UnsafeOutputError(f"{shown} lies inside {role} ({path}), which this command reads: write elsewhere")


def _is_clsr_output(folder: Path) -> bool:
    """Whether `folder` is an index, SAE or export that clsr wrote (it holds one of their markers)."""
    if not folder.is_dir():
        return False
    names = os.listdir(folder)
    return any(kind.recognises(names) for kind in (INDEX, SAE, SENTENCE_TRANSFORMERS))


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False, *, kind: OutputKind = INDEX,
                     sources: Mapping[str, str | os.PathLike | None] | None = None,
                     option: str = "--index") -> Iterator[Path]:
    """Yield a temporary directory beside `target` that becomes `target` only if the block succeeds.

    `target` must pass `check_replaceable` (as `kind`, with the command's `sources`; `option` names it in
    messages), else UnsafeOutputError before anything is written; an existing target is replaced only with
    `overwrite`, else InvalidIndexError.
    One build of a target at a time: a second raises InvalidIndexError at once (an advisory lock on
    ``.NAME.lock``, released by the kernel even when a build is killed). Folders left by a killed
    build of the same target are removed first, with a warning. The old index is moved aside and the
    new one renamed into place, so a search running meanwhile finishes on the old one, and one that
    opens in between finds no index and says so; neither reads a half-written one.
    """
    target = check_replaceable(target, kind, sources, option=option)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):
        leftovers = sorted([*target.parent.glob(f".{target.name}.building-*"), *_stale_adaptations(target)])
        for leftover in leftovers:
            shutil.rmtree(leftover, ignore_errors=True)
        if leftovers:
            log.warning("removed %d unfinished build folder(s) of %s left by an interrupted build: %s", len(leftovers),
                        target, ", ".join(p.name for p in leftovers))
        if target.exists() and not overwrite:
            raise InvalidIndexError(f"{target} already exists; pass --overwrite to {kind.redo} it")
        check_replaceable(target, kind, sources, option=option)  # again under the lock: what is there now
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
