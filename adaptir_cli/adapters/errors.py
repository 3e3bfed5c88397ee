"""Errors raised when an adapter file cannot be read or does not fit the loaded base."""

from __future__ import annotations


class AdapterFileError(ValueError):
    """A file is not a readable adapter file; the message says why and what to do."""


class AdapterMismatchError(ValueError):
    """An adapter does not belong to (or cannot fit) the base it is being applied to."""


class UnknownMethodError(KeyError):
    """No adapter method of this name is registered."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])
