"""vdr: visual-document retrieval. Index PDFs as late-interaction multi-vectors, search pages
by text, and see which page regions matched which query words."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vdr.errors import VdrError

if TYPE_CHECKING:
    from vdr.index import Index

__all__ = ["Index", "VdrError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Index pulls in torch (~1 s): imported on first use, so `vdr --help` and the CLI's
    # argument errors answer at once.
    if name == "Index":
        from vdr.index import Index

        return Index
    raise AttributeError(f"module 'vdr' has no attribute {name!r}")
