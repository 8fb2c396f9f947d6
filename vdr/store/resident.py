"""Every page's full multi-vector held in device memory, for the exact rerank with our own
MaxSim kernels (vdr.kernels.maxsim: Triton on a CUDA GPU, the chunked CPU path otherwise).

Qdrant reranks next to its own storage; ours needs the vectors where the kernel runs, and
reading them out of Qdrant costs ~7 ms per page through the Python bindings (the floats come
back as Python lists), far more than scoring them. So they are read once, when the store opens,
and from then on kept in step by the store's own writes (upsert, delete, move): the index is
open in one process only, so no other writer can change them behind our back.

Memory: 4 bytes x tokens x dim per page (float32, so that scores match Qdrant's within 1e-6):
a ColPali page (1,030 x 128) is 0.53 MB, a default-encoder page (~500 x 384) 0.77 MB.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from vdr.kernels import maxsim, top_documents
from vdr.store.base import Hit

# (queries [1, m, dim], docs [total, dim], offsets [n + 1]) -> scores [1, n] float32
Scorer = Callable[[Tensor, Tensor, Tensor], Tensor]


class ResidentVectors:
    """Page multi-vectors resident on `device`, reranked exactly.

    device: where the vectors live and MaxSim runs (torch.device("cuda") or "cpu"). On a GPU the
            candidates are packed end to end (a device-to-device copy) and scored by one launch
            of the Triton kernel. On a CPU they are scored page by page, one matrix product
            each: packing would copy every candidate's vectors again (measured 2x slower).
    scorer: a MaxSim function over packed documents to use instead, on any device (tests run
            maxsim_triton on CPU tensors under triton's interpreter).
    """

    def __init__(self, device: torch.device, scorer: Scorer | None = None) -> None:
        self.device = device
        self._scorer = scorer
        self._pages: dict[str, tuple[Hit, Tensor]] = {}
        self._lock = threading.Lock()

    def put(self, pages: Iterable[tuple[Hit, np.ndarray]]) -> None:
        """Add or replace pages: (their hit with any score, their full [n, dim] float32 vectors,
        exactly as Qdrant holds them)."""
        moved = [
            (hit, torch.from_numpy(np.asarray(v, np.float32)).to(self.device)) for hit, v in pages
        ]
        with self._lock:
            self._pages.update((hit.page_id, (hit, vectors)) for hit, vectors in moved)

    def drop_documents(self, doc_ids: Collection[str]) -> None:
        with self._lock:
            for page_id in [p for p, (hit, _) in self._pages.items() if hit.doc_id in doc_ids]:
                del self._pages[page_id]

    def move_document(self, doc_id: str, doc_path: str) -> None:
        with self._lock:
            for page_id, (hit, vectors) in self._pages.items():
                if hit.doc_id == doc_id:
                    self._pages[page_id] = (replace(hit, doc_path=doc_path), vectors)

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def nbytes(self) -> int:
        """Device memory the vectors take."""
        with self._lock:
            return sum(v.nbytes for _, v in self._pages.values())

    def rerank(
        self,
        query: np.ndarray,
        k: int,
        page_ids: Collection[str] | None,
        doc_ids: Sequence[str] | None = None,
    ) -> list[Hit]:
        """Top k of these pages by exact MaxSim against `query` ([m, dim] float32), best first.

        page_ids: the first stage's candidates (None: every resident page).
        doc_ids:  restrict to these documents.
        """
        with self._lock:
            chosen = (
                list(self._pages.values())
                if page_ids is None
                else [self._pages[p] for p in page_ids if p in self._pages]
            )
        if doc_ids is not None:
            wanted = set(doc_ids)
            chosen = [page for page in chosen if page[0].doc_id in wanted]
        if not chosen:
            return []
        pages = [vectors for _, vectors in chosen]
        tokens = torch.from_numpy(np.asarray(query, np.float32)).to(self.device)
        if self._scorer is None and self.device.type == "cpu":
            # Every resident page has >= 1 vector (Qdrant's one zero vector for a blank page).
            scores = torch.stack([(tokens @ page.T).amax(dim=1).sum() for page in pages])[None]
        else:
            lengths = torch.tensor([len(page) for page in pages], dtype=torch.int64)
            offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(self.device)
            scores = (self._scorer or maxsim)(tokens[None], torch.cat(pages), offsets)
        best = top_documents(scores, k)
        return [
            replace(chosen[i][0], score=float(s))
            for i, s in zip(best.docs[0].tolist(), best.scores[0].tolist(), strict=True)
        ]
