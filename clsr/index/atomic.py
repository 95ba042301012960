"""Atomic index builds: a build is written into a hidden sibling folder and renamed into place only when
complete, under an advisory lock, so an interrupted build never leaves a folder that looks like an index."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from clsr.errors import InvalidIndexError

log = logging.getLogger("clsr.index")


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
