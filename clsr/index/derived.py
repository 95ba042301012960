"""What clsr writes for an index after its build, and where: the engines of `clsr.search.engines` and the concept
catalogue when it is described on first use (`clsr.interpret.describe`).

An index folder may be read-only (a shared prebuilt index, a read-only volume), another user's, copied, or opened
by several processes at once, and what is derived from it is a cache: it can always be rebuilt from the index. So
a derived artefact (:func:`open_derived`):

* lives in the index folder where that can be written, else in ``$CLSR_CACHE/derived/<identity>/``, keyed by the
  index's build (:meth:`IndexManifest.identity`: copies of one index share it, a rebuilt index gets a new one), with
  a note saying where; where neither can be written it is built into a temporary folder for this process only;
* is built by one process at a time (a blocking lock beside it; the others wait, then read what it built), into a
  hidden folder renamed into place, with the umask's modes, so another user can read it;
* records its files' sizes (``clsr-derived.json``) when complete: one cut short, or one its reader cannot decode
  (a Rust panic included), is named in one line and rebuilt;
* removes the hidden folders of builds that were killed (it holds the lock, so none of them is still running).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from clsr import __version__
from clsr.errors import ClsrError
from clsr.index.manifest import IndexManifest

log = logging.getLogger("clsr.index")

MARKER = "clsr-derived.json"  # in a derived folder, written last: what it holds, and each file's size in bytes
CACHE_DIR = "derived"
T = TypeVar("T")


class DamagedArtefactError(ClsrError):
    """A derived artefact whose files do not match what its build recorded (cut short, or changed)."""


def cache_place(index_dir: str | os.PathLike) -> Path:
    """Where an index's derived artefacts go when its folder cannot be written: ``$CLSR_CACHE/derived/<identity>``."""
    from clsr.encode.dense import cache_root

    return cache_root() / CACHE_DIR / IndexManifest.read(index_dir).identity()


def places(index_dir: str | os.PathLike) -> list[Path]:
    """The folders a derived artefact of ``index_dir`` may be in, in the order they are read: the index, the cache."""
    return [Path(index_dir), cache_place(index_dir)]


def find_derived(index_dir: str | os.PathLike, name: str) -> Path | None:
    """The path of the derived artefact ``name`` (relative, e.g. ``concepts.jsonl``) where it exists, or None."""
    for place in places(index_dir):
        if (place / name).exists():
            return place / name
    return None


def open_derived(index_dir: str | os.PathLike, name: str, what: str, build: Callable[[Path], None],
                 load: Callable[[Path], T], folder: bool = True) -> T:
    """``load(path)`` of the derived artefact ``name`` of an index, built first by ``build(path)`` where it is
    missing or damaged.

    ``name``: a path relative to the index (``engines/seismic-...``); ``folder``: the artefact is a folder (its
    files' sizes are recorded in :data:`MARKER` and checked before loading) or one file. ``what`` names it in notes
    ("the Seismic engine"). ``load`` may raise anything (a Rust ``PanicException`` included): the artefact is then
    damaged, said in one line, and rebuilt. Raises what ``build`` raises, and OSError where nothing can be written.
    """
    damaged = set()  # (path, inode) of what was found damaged: a rebuild by another process has a new inode
    for path in _existing(index_dir, name):
        loaded = _try_load(path, what, load, folder)
        if loaded is not _DAMAGED:
            return loaded
        damaged.add((path, _inode(path)))
    for place in _writable_places(index_dir, name, what):
        with _locked(place / name) as locked:
            if not locked:
                continue
            target = place / name
            if target.exists() and (target, _inode(target)) not in damaged:  # built by another process meanwhile
                loaded = _try_load(target, what, load, folder)
                if loaded is not _DAMAGED:
                    return loaded
            if target.exists():
                _remove(target)
            _build(target, what, build, folder)
            return load(target)
    # Nowhere to keep it (the index and $CLSR_CACHE both read-only): built for this process only.
    with tempfile.TemporaryDirectory(prefix="clsr-derived-") as scratch:
        log.info("building %s into %s for this run only: neither %s nor %s can be written", what, scratch,
                 index_dir, cache_place(index_dir))
        target = Path(scratch) / Path(name).name
        _build(target, what, build, folder)
        return load(target)


_DAMAGED = object()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _existing(index_dir: str | os.PathLike, name: str) -> list[Path]:
    return [place / name for place in places(index_dir) if (place / name).exists()]


def _try_load(path: Path, what: str, load: Callable[[Path], T], folder: bool):
    """``load(path)``, or _DAMAGED (said in one line) when its files differ from its record or it cannot be read."""
    try:
        if folder:
            check_complete(path)
        return load(path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001  pyo3's PanicException derives from BaseException
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = (lines[0][:200] if lines else "") or type(error).__name__  # a panic's message, not its backtrace
        log.warning("%s at %s is damaged and not used (%s); it is rebuilt from the index", what, path, reason)
        return _DAMAGED


def check_complete(folder: Path) -> None:
    """Raise DamagedArtefactError when ``folder``'s files are not those its :data:`MARKER` records (a file cut short
    by a full disk, or missing). A folder without a marker (built by clsr before it wrote one) passes."""
    marker = folder / MARKER
    if not marker.exists():
        return
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise DamagedArtefactError(f"{marker} cannot be read ({e})") from None
    for relative, size in files.items():
        path = folder / relative
        actual = path.stat().st_size if path.exists() else None
        if actual != size:
            raise DamagedArtefactError(f"{path} has {actual if actual is not None else 'no'} bytes where its build "
                                       f"wrote {size}")


def _writable_places(index_dir: str | os.PathLike, name: str, what: str) -> Iterator[Path]:
    """The places to build in, in order: the index folder if this process can write there, else the cache (said
    once). A place that turns out not to be writable is skipped by `_locked`."""
    yield Path(index_dir)
    cache = cache_place(index_dir)
    log.info("%s cannot be written here: %s goes to %s", index_dir, what, cache / name)
    yield cache


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[bool]:
    """Hold ``.NAME.lock`` beside ``target`` (waiting for another process that holds it); yield False, holding
    nothing, where the folder cannot be written. The lock file stays: removing it would race with a waiter."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # mkdir applies the umask
        lock = open(target.parent / f".{target.name}.lock", "a+")
    except OSError:  # read-only, or another user's folder
        yield False
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        for leftover in target.parent.glob(f".{target.name}.building-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # a killed build's: every live build holds this lock
            log.info("removed %s, left by a build that was killed", leftover)
        yield True


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _build(target: Path, what: str, build: Callable[[Path], None], folder: bool) -> None:
    """``build`` into a hidden sibling of ``target``, then its marker, then the rename; said with its time."""
    start = time.perf_counter()
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        building.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make it private to whoever searched first
        output = building if folder else building / target.name
        build(output)
        if folder:
            files = {str(p.relative_to(building)): p.stat().st_size for p in sorted(building.rglob("*"))
                     if p.is_file()}
            (building / MARKER).write_text(json.dumps({"what": what, "clsr_version": __version__,
                                                       "build_seconds": round(time.perf_counter() - start, 3),
                                                       "files": files}, indent=1) + "\n")
            os.replace(building, target)
        else:
            os.replace(output, target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    size = sum(p.stat().st_size for p in target.rglob("*")) if folder else target.stat().st_size
    log.info("built %s in %.1f s (once: %.1f MB kept in %s)", what, time.perf_counter() - start, size / 1e6, target)


def _remove(target: Path) -> None:
    """Remove a damaged derived artefact (clsr's own), moving it aside first so no reader sees half of it."""
    aside = target.with_name(f".{target.name}.damaged-{os.getpid()}")
    os.replace(target, aside)
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
