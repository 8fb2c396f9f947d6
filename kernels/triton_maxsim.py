"""MaxSim on the GPU with Triton, for variable-length documents packed end to end.

One program scores one (query, document) pair: it holds the query's tokens, streams the
document's tokens in tiles of BLOCK_D rows, and keeps a running max per query token, so the
[q_tokens x doc_tokens] similarity matrix never lands in memory.

Importing this module does not import triton: the kernel is compiled on first use, so
`vdr.kernels` imports on machines without triton.

TRITON_INTERPRET=1 runs the kernel on CPU tensors in triton's interpreter (for tests). It must be
set before anything imports triton (torch._dynamo does, through transformers): triton.language's
own helpers (tl.max, tl.sum, tl.cdiv) take their mode at that import, and maxsim_triton raises
a RuntimeError saying so when the modes disagree.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vdr.kernels.reference import check_maxsim_inputs

# Document tokens per tile: 64 rows x dim 128 in fp16 is 16 KiB per tile, small enough for
# several programs per SM, large enough to feed the tensor cores.
BLOCK_D = 64
# Dims up to this are one block (the query tile is then loaded once per program); wider
# embeddings are reduced in chunks of DIM_CHUNK.
MAX_SINGLE_BLOCK_DIM = 256
DIM_CHUNK = 64
# Query tokens per launch. Longer queries are split and the partial sums added (MaxSim is a sum
# over query tokens), which bounds the [BLOCK_Q x BLOCK_D] accumulator held in registers.
MAX_BLOCK_Q = 128
# tl.dot needs every side of its operands to be at least 16 on NVIDIA GPUs.
MIN_DOT_SIDE = 16
# Triton refuses blocks of more elements than this.
MAX_BLOCK_ELEMENTS = 2**20
# One program per (query, document) on grid axis 0, whose limit is 2^31 - 1.
MAX_PROGRAMS = 2**31 - 1

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# triton.language, bound by _jit() on first use so that importing this module never imports
# triton. The kernel below refers to it as a module global, which is how both triton's compiler
# and its interpreter resolve names inside a kernel.
tl: Any = None


@dataclass(frozen=True)
class TopDocuments:
    """The best documents per query, best first."""

    scores: Tensor  # [n_queries, k] float32, descending along each row
    docs: Tensor  # [n_queries, k] int64, document indices into doc_offsets' documents


def maxsim_triton(
    queries: Tensor,
    docs: Tensor,
    doc_offsets: Tensor,
    query_mask: Tensor | None = None,
    *,
    block_d: int = BLOCK_D,
    block_k: int | None = None,
) -> Tensor:
    """Late-interaction scores of every query against every document, in one Triton kernel.

    queries:     [n_queries, q_tokens, dim], float32, float16 or bfloat16
    docs:        [total_doc_tokens, dim], same dtype as queries, all documents packed end to
                 end (no padding)
    doc_offsets: [n_docs + 1], int64 (int32 is widened); document i is
                 docs[doc_offsets[i]:doc_offsets[i+1]]
    query_mask:  [n_queries, q_tokens], bool; False tokens add nothing to the score
    returns:     [n_queries, n_docs], float32, on the inputs' device

    Same contract as `maxsim_reference`: a document of length 0 scores 0, and so does a query
    whose tokens are all masked. Inputs must be CUDA tensors, or CPU tensors when the
    environment has TRITON_INTERPRET=1 (triton's interpreter, ~100x slower than torch: tests).

    Accumulates in float32 whatever the input dtype: a bfloat16 sum of ~30 terms near 1.0
    has steps of 0.125, enough to reorder close pages. float32 inputs are multiplied in full
    precision (no TF32: its 10-bit mantissa would cost ~1e-3 relative error).

    Memory: the output (twice for queries of over 128 tokens, scored in parts); no
    [q_tokens x doc_tokens] matrix is ever stored. The offsets are read once on the host (one
    device sync) to check that they stay inside `docs`.

    block_d: document tokens per tile, a power of two >= 16.
    block_k: dim chunk, a power of two >= 16; by default the whole dim rounded up to a power
             of two when dim <= 256, else 64.
    """
    offsets, mask = check_maxsim_inputs(queries, docs, doc_offsets, query_mask)
    if queries.dtype not in SUPPORTED_DTYPES or docs.dtype != queries.dtype:
        raise TypeError(
            "maxsim_triton needs queries and docs of one dtype among float32, float16 and "
            f"bfloat16, got {queries.dtype} and {docs.dtype} (cast them, or use maxsim_reference)"
        )
    interpret = _interpreting()
    if queries.device.type != "cuda" and not (interpret and queries.device.type == "cpu"):
        raise ValueError(
            f"maxsim_triton runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got "
            f"{queries.device}: use maxsim_reference there"
        )
    n_queries, q_tokens, dim = queries.shape
    n_docs = offsets.numel() - 1
    scores = torch.zeros(n_queries, n_docs, dtype=torch.float32, device=queries.device)
    if scores.numel() == 0 or q_tokens == 0 or docs.shape[0] == 0 or dim == 0:
        return scores  # nothing to compare: every score is the empty sum, 0
    if n_queries * n_docs > MAX_PROGRAMS:
        raise ValueError(
            f"{n_queries} queries x {n_docs} documents is more than {MAX_PROGRAMS} pairs in "
            "one launch: score the queries in smaller batches"
        )
    if block_k is None:
        block_k = _pow2_at_least(dim) if dim <= MAX_SINGLE_BLOCK_DIM else DIM_CHUNK
    for name, value in (("block_d", block_d), ("block_k", block_k)):
        if value < MIN_DOT_SIDE or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= {MIN_DOT_SIDE}, got {value}")
    if MAX_BLOCK_Q * max(block_d, block_k) > MAX_BLOCK_ELEMENTS:
        raise ValueError(f"block_d and block_k must be <= {MAX_BLOCK_ELEMENTS // MAX_BLOCK_Q}")

    _check_language_mode(interpret)
    kernel = _jit(interpret)
    # The kernel assumes unit stride along dim (no-ops for the usual contiguous inputs).
    queries = queries if queries.stride(2) == 1 else queries.contiguous()
    docs = docs if docs.stride(1) == 1 else docs.contiguous()
    mask_bytes = mask.view(torch.uint8)  # bool and uint8 share a layout; triton loads bytes
    for first in range(0, q_tokens, MAX_BLOCK_Q):
        chunk = queries[:, first : first + MAX_BLOCK_Q]
        chunk_mask = mask_bytes[:, first : first + MAX_BLOCK_Q]
        partial = torch.empty_like(scores)
        kernel[(n_queries * n_docs,)](
            chunk,
            docs,
            offsets,
            chunk_mask,
            partial,
            n_queries,
            n_docs,
            chunk.shape[1],
            dim,
            chunk.stride(0),
            chunk.stride(1),
            docs.stride(0),
            chunk_mask.stride(0),
            chunk_mask.stride(1),
            BLOCK_Q=_pow2_at_least(chunk.shape[1]),
            BLOCK_D=block_d,
            BLOCK_K=block_k,
            ONE_K=block_k >= dim,
            UPCAST=queries.dtype == torch.bfloat16,
            # float32 inputs in full precision. bfloat16 inputs are upcast, and a bfloat16 value
            # is exact in TF32 (7 < 10 mantissa bits), so TF32 loses nothing there.
            DOT_PRECISION="tf32" if queries.dtype == torch.bfloat16 else "ieee",
        )
        scores = partial if first == 0 else scores + partial
    return scores


def top_documents(scores: Tensor, k: int) -> TopDocuments:
    """The k best documents per query from a [n_queries, n_docs] score matrix (any device),
    best first; k is clipped to n_docs. The order of tied scores is unspecified.

    >>> best = top_documents(torch.tensor([[0.5, 2.0, 1.0]]), k=2)
    >>> best.docs, best.scores
    (tensor([[1, 2]]), tensor([[2., 1.]]))
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [n_queries, n_docs], got {tuple(scores.shape)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    values, indices = torch.topk(scores, min(k, scores.shape[1]), dim=1, sorted=True)
    return TopDocuments(scores=values.to(torch.float32), docs=indices)


def _pow2_at_least(n: int) -> int:
    """The smallest power of two >= max(n, MIN_DOT_SIDE)."""
    return max(MIN_DOT_SIDE, 1 << (n - 1).bit_length())


def _interpreting() -> bool:
    """Whether triton would build the kernel for its CPU interpreter right now. The first
    place maxsim_triton needs triton, so the one that explains its absence."""
    try:
        import triton
    except ImportError as error:
        raise ImportError(
            "maxsim_triton needs triton (installed with torch's CUDA wheels on Linux): install "
            "it, or score with maxsim_reference"
        ) from error

    knobs = getattr(triton, "knobs", None)  # triton >= 3.4 reads its variables through knobs
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_language_mode(interpret: bool) -> None:
    """Refuse to run when triton.language was imported in the other mode: its own helpers
    (tl.cdiv, tl.max, tl.sum) are @triton.jit functions, fixed to compiled or interpreted when
    triton.language is first imported, and a kernel cannot call helpers of the other mode."""
    import triton.language
    from triton.runtime.interpreter import InterpretedFunction

    imported_interpreted = isinstance(triton.language.cdiv, InterpretedFunction)
    if imported_interpreted != interpret:
        now, then = ("set", "unset") if interpret else ("unset", "set")
        raise RuntimeError(
            f"TRITON_INTERPRET is {now} but was {then} when triton was first imported, and "
            "triton fixes its own functions to one mode at import: set it (or not) before "
            "anything imports triton, e.g. at the start of the process (torch._dynamo, "
            "transformers and colpali-engine import triton)"
        )


@functools.cache
def _jit(interpret: bool) -> Any:
    """The kernel, compiled for the GPU or wrapped for the interpreter. `triton.jit` decides
    which from TRITON_INTERPRET at the moment it is called, so the mode is the cache key."""
    global tl
    import triton
    import triton.language

    tl = triton.language
    return triton.jit(_maxsim_program)


def _maxsim_program(
    queries_ptr,
    docs_ptr,
    offsets_ptr,
    mask_ptr,
    out_ptr,
    n_queries,
    n_docs,
    q_tokens,
    dim,
    stride_query,
    stride_query_token,
    stride_doc_token,
    stride_mask_query,
    stride_mask_token,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ONE_K: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Score of one (query, document) pair into out[query, doc]; compiled by `_jit`."""
    # Every index that can reach a document's tokens is int64: packed documents pass 2^31
    # elements (~16M tokens at dim 128) in a large collection, and int32 would wrap silently.
    pid = tl.program_id(0).to(tl.int64)
    # Queries vary fastest, so neighbouring programs read the same document tiles from cache.
    query = pid % n_queries
    doc = pid // n_queries
    start = tl.load(offsets_ptr + doc)
    end = tl.load(offsets_ptr + doc + 1)

    tokens = tl.arange(0, BLOCK_Q)
    token_in = tokens < q_tokens
    dims = tl.arange(0, BLOCK_K)
    query_rows = queries_ptr + query * stride_query + tokens[:, None] * stride_query_token
    if ONE_K:
        # The whole dim is one block: load the query once, not once per document tile.
        whole_query = tl.load(
            query_rows + dims[None, :], mask=token_in[:, None] & (dims < dim)[None, :], other=0.0
        )
        if UPCAST:
            whole_query = whole_query.to(tl.float32)

    best = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    for tile in range(0, tl.cdiv(end - start, BLOCK_D)):
        rows = start + tile * BLOCK_D + tl.arange(0, BLOCK_D)
        row_in = rows < end
        similarities = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
        for k0 in range(0, dim, BLOCK_K):
            k = k0 + dims
            k_in = k < dim
            # Zeros past dim (and past the last row) add nothing to a dot product; padded rows
            # are excluded from the max below, where a zero would be wrong.
            tile_t = tl.load(
                docs_ptr + rows[None, :] * stride_doc_token + k[:, None],
                mask=k_in[:, None] & row_in[None, :],
                other=0.0,
            )  # [BLOCK_K, BLOCK_D]
            if ONE_K:
                query_k = whole_query
            else:
                query_k = tl.load(
                    query_rows + k[None, :], mask=token_in[:, None] & k_in[None, :], other=0.0
                )
                if UPCAST:
                    query_k = query_k.to(tl.float32)
            if UPCAST:
                # bfloat16 goes through the dot as float32: triton's CPU interpreter multiplies
                # bfloat16 wrongly, and one code path serves the GPU and the tests.
                tile_t = tile_t.to(tl.float32)
            similarities = tl.dot(query_k, tile_t, similarities, input_precision=DOT_PRECISION)
        # Padding rows to -inf, never x0: similarities can be negative, and a 0 would win.
        similarities = tl.where(row_in[None, :], similarities, float("-inf"))
        best = tl.maximum(best, tl.max(similarities, axis=1))

    keep = tl.load(
        mask_ptr + query * stride_mask_query + tokens * stride_mask_token, mask=token_in, other=0
    )
    # Masked and padded query tokens add 0 (a where, since their `best` may be -inf).
    score = tl.sum(tl.where(token_in & (keep != 0), best, 0.0), axis=0)
    # An empty document leaves every `best` at -inf: it scores 0 by contract.
    score = tl.where(end > start, score, 0.0)
    tl.store(out_ptr + query * n_docs + doc, score)
