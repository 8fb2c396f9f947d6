"""Typed errors of the library. The CLI and the HTTP API turn each into one sentence."""

from __future__ import annotations


class VdrError(Exception):
    """Base class: the message is a complete sentence a person can act on."""


class BadDocument(VdrError):
    """A file cannot be indexed (corrupt, encrypted, empty, not a PDF). Others go on."""


class IndexLocked(VdrError):
    """Another process has the index open; `server_url` is where, when it is `vdr serve`."""

    def __init__(self, message: str, server_url: str | None = None) -> None:
        super().__init__(message)
        self.server_url = server_url


class ModelMismatch(VdrError):
    """The index was built with another encoder than the one asked for."""


class UnknownModel(VdrError):
    """No encoder can be loaded from the given name or directory."""


class NotFound(VdrError):
    """A page, document or file asked for does not exist."""
