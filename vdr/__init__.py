"""vdr: visual-document retrieval. Index PDFs as late-interaction multi-vectors, search pages
by text, and see which page regions matched which query words."""

from __future__ import annotations

from vdr.errors import VdrError
from vdr.index import Index

__all__ = ["Index", "VdrError"]
__version__ = "0.1.0"
