"""The one base class of the errors a user can fix: the command line prints them as one line."""

from __future__ import annotations


class ClsrError(Exception):
    """Input, an index or arguments that clsr cannot use as given; the message says what and where."""


class UsageError(ClsrError, ValueError):
    """Arguments that contradict each other or the index they name."""


class InvalidIndexError(ClsrError, RuntimeError):
    """An index that cannot be built, read, or used as asked (its manifest included)."""
