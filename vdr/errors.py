"""Typed errors of the library. The CLI and the HTTP API turn each into one sentence."""

from __future__ import annotations


class VdrError(Exception):
    """Base class: the message is a complete sentence a person can act on."""


class BadDocument(VdrError):
    """A file (or one page of it) cannot be indexed. Others go on.

    kind: why, in one word ("damaged", "encrypted", "empty", "not_pdf", "no_pages",
          "too_many_pages", "timeout", "memory", "unreadable", ...), so that a refusal new
          input can lift (a password for an encrypted file) is tried again
    """

    def __init__(self, message: str, kind: str = "damaged") -> None:
        super().__init__(message)
        self.kind = kind


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


class UnknownId(NotFound):
    """A document or page id the index does not hold. Its message is the one wording every
    edge passes on as it is (the CLI's sentence, the API's 404): "no document 'ID' in the
    index". kind: "document" or "page"."""

    def __init__(self, kind: str, value: str) -> None:
        super().__init__(f"no {kind} '{value[:80]}' in the index")
        self.kind = kind
