"""MaxSim scoring kernels (imported as vdr.kernels).

maxsim dispatches on the inputs' device: the Triton kernel for CUDA tensors, the exact CPU
path otherwise. maxsim_reference is the plain torch ground truth. Search reranks with them
through vdr.store.resident (--rerank vdr; the default on a CUDA GPU).
"""

from __future__ import annotations

from torch import Tensor

from vdr.kernels.cpu import maxsim_cpu
from vdr.kernels.reference import maxsim_reference
from vdr.kernels.triton_maxsim import TopDocuments, maxsim_triton, top_documents


def maxsim(
    queries: Tensor, docs: Tensor, doc_offsets: Tensor, query_mask: Tensor | None = None
) -> Tensor:
    """[n_queries, n_docs] float32 MaxSim scores (contract: vdr.kernels.reference): Triton on
    CUDA tensors, the chunked CPU path on anything else."""
    if queries.is_cuda:
        return maxsim_triton(queries, docs, doc_offsets, query_mask)
    return maxsim_cpu(queries, docs, doc_offsets, query_mask)


__all__ = [
    "TopDocuments",
    "maxsim",
    "maxsim_cpu",
    "maxsim_reference",
    "maxsim_triton",
    "top_documents",
]
