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
    """Page multi-vectors resident on `device`, reranked with `scorer`.

    device: where the vectors live and the kernel runs (torch.device("cuda") or "cpu").
    scorer: the MaxSim function; vdr.kernels.maxsim picks the kernel for the device. Tests pass
            maxsim_triton to run the Triton kernel on CPU tensors under its interpreter.
    """

    def __init__(self, device: torch.device, scorer: Scorer = maxsim) -> None:
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
        docs = torch.cat([vectors for _, vectors in chosen])
        lengths = torch.tensor([len(vectors) for _, vectors in chosen], dtype=torch.int64)
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(self.device)
        queries = torch.from_numpy(np.asarray(query, np.float32)).to(self.device)[None]
        best = top_documents(self._scorer(queries, docs, offsets), k)
        return [
            replace(chosen[i][0], score=float(s))
            for i, s in zip(best.docs[0].tolist(), best.scores[0].tolist(), strict=True)
        ]
