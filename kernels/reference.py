"""MaxSim in plain torch: the ground truth every faster kernel is tested against.

It loops over documents, so it is slow on many short documents, but each line is the
definition: for each query token, the best similarity over the document's tokens, summed over
the query tokens that the mask keeps.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_maxsim_inputs(
    queries: Tensor, docs: Tensor, doc_offsets: Tensor, query_mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Validate the MaxSim contract (see `maxsim_reference`). Returns the offsets as int64
    (int32 is widened) and the query mask as bool (all True when none is given), both on the
    queries' device.

    Raises ValueError or TypeError with the offending shape, dtype or device. Reads the offsets
    once (one device sync) to check that they are ordered and inside `docs`: a kernel trusts
    them as addresses.
    """
    if queries.ndim != 3 or docs.ndim != 2:
        raise ValueError(
            "queries must be [n_queries, q_tokens, dim] and docs [total_doc_tokens, dim], "
            f"got {tuple(queries.shape)} and {tuple(docs.shape)}"
        )
    if queries.shape[2] != docs.shape[1]:
        raise ValueError(f"queries have dim {queries.shape[2]} but docs have dim {docs.shape[1]}")
    if not (queries.is_floating_point() and docs.is_floating_point()):
        raise TypeError(
            f"queries and docs must be floating point, got {queries.dtype} and {docs.dtype}"
        )
    if doc_offsets.ndim != 1 or doc_offsets.numel() < 1:
        raise ValueError(f"doc_offsets must be [n_docs + 1], got {tuple(doc_offsets.shape)}")
    if doc_offsets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"doc_offsets must be int64 (or int32), got {doc_offsets.dtype}")
    devices = {queries.device, docs.device, doc_offsets.device}
    if query_mask is not None:
        devices.add(query_mask.device)
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")
    offsets = doc_offsets.to(torch.int64)
    if offsets.numel() > 1:
        ordered = bool((offsets[1:] >= offsets[:-1]).all())
        if not ordered or int(offsets[0]) < 0 or int(offsets[-1]) > docs.shape[0]:
            raise ValueError(
                f"doc_offsets must be non-decreasing within [0, {docs.shape[0]}] (the number of "
                "doc tokens)"
            )
    if query_mask is None:
        mask = torch.ones(queries.shape[:2], dtype=torch.bool, device=queries.device)
    else:
        if query_mask.shape != queries.shape[:2]:
            raise ValueError(
                f"query_mask must be [n_queries, q_tokens] = {tuple(queries.shape[:2])}, "
                f"got {tuple(query_mask.shape)}"
            )
        mask = query_mask.to(torch.bool)
    return offsets, mask


def maxsim_reference(
    queries: Tensor, docs: Tensor, doc_offsets: Tensor, query_mask: Tensor | None = None
) -> Tensor:
    """Late-interaction scores of every query against every document.

    queries:     [n_queries, q_tokens, dim], any float dtype
    docs:        [total_doc_tokens, dim], all documents packed end to end (no padding)
    doc_offsets: [n_docs + 1], int64; document i is docs[doc_offsets[i]:doc_offsets[i+1]]
    query_mask:  [n_queries, q_tokens], bool; False tokens add nothing to the score
    returns:     [n_queries, n_docs], float32, on the inputs' device

    Accumulates in float32 whatever the input dtype: a bfloat16 sum of ~30 terms near 1.0
    has steps of 0.125, enough to reorder close pages. A document of length 0 scores 0 (it has
    no token to be similar to), and so does a query whose tokens are all masked.

    Memory: one [n_queries, q_tokens, doc_tokens] float32 block per document, never the
    whole [queries x docs x q_tokens x d_tokens] tensor.

    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])           # one query, two tokens
    >>> d = torch.tensor([[1.0, 0.0], [-1.0, -1.0], [0.0, -2.0]])
    >>> maxsim_reference(q, d, torch.tensor([0, 2, 2, 3]))     # the 2nd document is empty
    tensor([[ 1.,  0., -2.]])
    """
    offsets, mask = check_maxsim_inputs(queries, docs, doc_offsets, query_mask)
    n_docs = offsets.numel() - 1
    queries32 = queries.to(torch.float32)
    docs32 = docs.to(torch.float32)
    scores = torch.zeros(queries.shape[0], n_docs, dtype=torch.float32, device=queries.device)
    bounds = offsets.tolist()
    for i in range(n_docs):
        start, end = bounds[i], bounds[i + 1]
        if start == end:
            continue  # an empty document scores 0: amax over no tokens is undefined
        similarities = queries32 @ docs32[start:end].T  # [n_queries, q_tokens, doc_tokens]
        best = similarities.amax(dim=2)  # [n_queries, q_tokens]
        # where, not a multiply by the mask: the intent reads directly, and a masked token
        # can never leak a non-finite value into the sum.
        scores[:, i] = torch.where(mask, best, 0.0).sum(dim=1)
    return scores
