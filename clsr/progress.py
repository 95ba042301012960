"""Progress bars for every long stage, shown whether or not stderr is a terminal.

tqdm's ``disable=None`` hides a bar when stderr is not a TTY, which left ``nohup``/``tee``/CI runs of
a ten-minute encoding without a word (issue 20). clsr's bars are always drawn on stderr, less often
when it is not a terminal (every 10 s, so a log file gets a readable trail), and end with the rate.
``TQDM_DISABLE=1`` hides them and ``TQDM_MININTERVAL`` sets the interval, as for any tqdm bar.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

LOG_INTERVAL_S = 10.0  # seconds between updates when stderr is a file or a pipe


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str, unit: str,
                 enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar on stderr named ``desc`` counting ``unit`` (its rate is shown as ``unit``/s); a no-op bar
    when not ``enabled``."""
    if "TQDM_MININTERVAL" not in os.environ and not _is_terminal(sys.stderr):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    # tqdm reads its TQDM_* variables once, when imported; these are read at each bar.
    kwargs["disable"] = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, **kwargs)


@contextlib.contextmanager
def elapsed_bar(desc: str, enabled: bool = True) -> Iterator[None]:
    """A bar that counts the seconds of a stage whose own progress cannot be read (Anserini's indexing, inside the
    JVM), so that a long stage is never silent; it ends with the stage's time."""
    bar = progress_bar(desc=desc, unit="s", enabled=enabled, bar_format="{desc}: {elapsed}")
    done = threading.Event()

    def tick() -> None:
        while not done.wait(1.0):
            bar.update(1)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        bar.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
