"""What became of every file an index has examined: indexed, indexed in part, or refused.

The store knows the pages it holds; this ledger knows the rest, by content id: why a file
was refused (so that an unchanged folder is not examined again on every run, and a refused
upload is still listed with its reason), which pages of a damaged document could not be read
(so that the document counts as complete without them), and the one message a person sees.

It lives in the index folder as `files.json`, rewritten atomically after each file, so a
crash leaves the old ledger or the new one. It is never the only record of a page: a lost
ledger costs a re-examination of the files it named, nothing more.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

LEDGER_FILE = "files.json"
Status = Literal["indexed", "partial", "refused"]


@dataclass(frozen=True)
class FileOutcome:
    """What the indexer made of one file.

    doc_id:    content id (vdr.indexer.discover.content_id), the store's doc_id
    path:      absolute path of the file when it was last examined
    status:    "indexed" (every page), "partial" (some pages unreadable), "refused" (none)
    message:   one sentence in vdr's words, "" for a clean index of every page
    pages:     pages the file has (0 when it was refused before they could be counted)
    bad_pages: 1-based numbers of the pages that could not be read ("partial" only)
    kind:      why a refusal happened, in one word ("encrypted", "damaged", "timeout", ...),
               so that a refusal that new input can lift (a password) is tried again
    """

    doc_id: str
    path: str
    status: Status
    message: str = ""
    pages: int = 0
    bad_pages: tuple[int, ...] = ()
    kind: str = ""


class Ledger:
    """The outcomes of an index's files, kept in `folder`/files.json. Thread-safe."""

    def __init__(self, folder: Path) -> None:
        self.file = folder / LEDGER_FILE
        self._lock = threading.Lock()
        self._outcomes: dict[str, FileOutcome] = {}
        try:
            entries = json.loads(self.file.read_text())
        except FileNotFoundError:
            entries = []
        except (OSError, ValueError):
            entries = []  # damaged: its files are examined again, nothing is lost
        for entry in entries if isinstance(entries, list) else []:
            try:
                outcome = FileOutcome(**{**entry, "bad_pages": tuple(entry["bad_pages"])})
            except (TypeError, KeyError):
                continue
            self._outcomes[outcome.doc_id] = outcome

    def get(self, doc_id: str) -> FileOutcome | None:
        with self._lock:
            return self._outcomes.get(doc_id)

    def outcomes(self) -> list[FileOutcome]:
        """Every outcome, sorted by path."""
        with self._lock:
            return sorted(self._outcomes.values(), key=lambda o: (o.path, o.doc_id))

    def record(self, outcome: FileOutcome) -> None:
        with self._lock:
            self._outcomes[outcome.doc_id] = outcome
            self._save()

    def forget(self, doc_ids: Iterable[str]) -> None:
        with self._lock:
            doomed = [d for d in doc_ids if d in self._outcomes]
            for doc_id in doomed:
                del self._outcomes[doc_id]
            if doomed:
                self._save()

    def _save(self) -> None:
        tmp = self.file.with_suffix(".tmp")
        entries = [asdict(o) for o in sorted(self._outcomes.values(), key=lambda o: o.doc_id)]
        tmp.write_text(json.dumps(entries, indent=1) + "\n")
        os.replace(tmp, self.file)
