"""MaxSim kernels: the Triton kernel against the torch reference (the contract's ground truth),
and both against colpali-engine's scorer.

Every kernel test runs on each backend: triton's CPU interpreter and the compiled kernel on a
CUDA GPU (skipped without one). TRITON_INTERPRET=1 must be set before anything imports triton,
and by the time this module is collected colpali-engine (through transformers and torch._dynamo)
has imported it, so the interpreted tests run in a child pytest started with the variable set
(test_interpreted_backend_in_child_process). The interpreter is ~100x slower than torch, so
shapes are small: ~100 documents of <= 40 tokens.
"""

from __future__ import annotations

import doctest
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor
from test_store import DIM, check_rerank_paths_agree
from torch import Tensor

from vdr.kernels import reference, triton_maxsim
from vdr.kernels.reference import maxsim_reference
from vdr.kernels.triton_maxsim import MAX_BLOCK_Q, maxsim_triton, top_documents
from vdr.store.edge import EdgeStore
from vdr.store.resident import ResidentVectors

pytest.importorskip("triton")

REPO = Path(__file__).resolve().parent.parent
# Max relative error allowed against the reference, per input dtype. The reference upcasts the
# same inputs to float32, so the kernel differs only in the order of float32 additions.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-5}
# Lengths every batch contains: empty, one token, and around BLOCK_D=16 tile boundaries.
EDGE_LENGTHS = [0, 1, 1, 15, 16, 17, 33]
N_DOCS = 104
BLOCK_D = 16  # small tiles, so that documents of <= 40 tokens span up to 3 of them
# Test id of the interpreter backend; the child process selects its tests with `-k`.
INTERPRETED = "interpreted"


def interpreter_in_process() -> bool:
    """Whether this process runs triton kernels in the interpreter: TRITON_INTERPRET=1 was set
    when triton.language was imported (its own helpers, like tl.max, are then interpreted)."""
    import triton.language
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(triton.language.cdiv, InterpretedFunction)


@pytest.fixture(params=[INTERPRETED, "cuda"])
def device(request: pytest.FixtureRequest) -> torch.device:
    """Where the kernel runs: CPU tensors under triton's interpreter, or a CUDA GPU."""
    if request.param == INTERPRETED:
        if not interpreter_in_process():
            pytest.skip("run by test_interpreted_backend_in_child_process")
        return torch.device("cpu")
    if interpreter_in_process():
        pytest.skip("this process runs triton's interpreter")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return torch.device("cuda")


def test_interpreted_backend_in_child_process() -> None:
    if interpreter_in_process():
        pytest.skip("this is the child process")
    child = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-k", INTERPRETED],
        cwd=REPO,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = child.stdout[-6000:] + child.stderr[-3000:]
    assert child.returncode == 0, report
    # It ran them rather than skipped them (which it would if the variable came too late).
    passed = re.search(r"(\d+) passed", child.stdout)
    assert passed and int(passed.group(1)) > 0, report


def make_batch(
    lengths: list[int],
    n_queries: int = 3,
    q_tokens: int = 7,
    dim: int = 24,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random unnormalised vectors (so many similarities are negative), packed documents of
    the given lengths, and a query mask that drops some tokens and all of the last query's.

    returns: queries [n_queries, q_tokens, dim], docs [sum(lengths), dim] (both `dtype`),
             doc_offsets [len(lengths) + 1] int64, query_mask [n_queries, q_tokens] bool
    """
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(n_queries, q_tokens, dim, generator=generator)
    docs = torch.randn(sum(lengths), dim, generator=generator)
    offsets = torch.tensor([0, *lengths]).cumsum(0)
    mask = torch.rand(n_queries, q_tokens, generator=generator) > 0.2
    mask[-1] = False
    return (
        queries.to(dtype=dtype, device=device),
        docs.to(dtype=dtype, device=device),
        offsets.to(device),
        mask.to(device),
    )


def mixed_lengths(n_docs: int = N_DOCS, longest: int = 40, seed: int = 1) -> list[int]:
    """The edge lengths followed by random ones in [1, longest]."""
    generator = torch.Generator().manual_seed(seed)
    extra = torch.randint(1, longest + 1, (n_docs - len(EDGE_LENGTHS),), generator=generator)
    return EDGE_LENGTHS + extra.tolist()


def relative_error(got: Tensor, want: Tensor) -> float:
    """Largest elementwise |got - want| / |want|, with |want| floored at 1.0 (about 1/50 of a
    typical score here): a score that cancels to near zero is held to an absolute tolerance,
    not to a ratio of two tiny numbers."""
    assert got.shape == want.shape and got.dtype == want.dtype == torch.float32
    return ((got - want).abs() / want.abs().clamp_min(1.0)).max().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kernel_matches_reference(device: torch.device, dtype: torch.dtype) -> None:
    queries, docs, offsets, mask = make_batch(mixed_lengths(), dtype=dtype, device=device)

    want = maxsim_reference(queries, docs, offsets, mask)
    got = maxsim_triton(queries, docs, offsets, mask, block_d=BLOCK_D)

    assert got.shape == (3, N_DOCS) and got.device == queries.device
    assert relative_error(got, want) <= TOLERANCE[dtype]
    # The batch tests what it claims: negative scores (a 0 from padding would have won those
    # maxes), empty documents and the all-masked query scoring exactly 0.
    assert (want < 0).any()
    assert (got[:, 0] == 0).all()
    assert (got[-1] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dim_reduced_in_chunks(device: torch.device, dtype: torch.dtype) -> None:
    # dim 40 in chunks of 16: two full chunks and a partial one, the path wide embeddings take
    queries, docs, offsets, mask = make_batch(
        mixed_lengths(), n_queries=2, dim=40, dtype=dtype, device=device
    )

    want = maxsim_reference(queries, docs, offsets, mask)
    got = maxsim_triton(queries, docs, offsets, mask, block_d=2 * BLOCK_D, block_k=16)

    assert relative_error(got, want) <= TOLERANCE[dtype]


def test_long_queries_are_split_and_summed(device: torch.device) -> None:
    queries, docs, offsets, mask = make_batch(
        mixed_lengths(longest=32), n_queries=2, q_tokens=MAX_BLOCK_Q + 3, dim=16, device=device
    )

    want = maxsim_reference(queries, docs, offsets, mask)
    got = maxsim_triton(queries, docs, offsets, mask, block_d=2 * BLOCK_D)

    assert relative_error(got, want) <= TOLERANCE[torch.float32]


def test_degenerate_batches_score_zero(device: torch.device) -> None:
    queries, docs, offsets, _ = make_batch([0, 0, 0], device=device)
    assert maxsim_triton(queries, docs, offsets).eq(0).all()
    assert maxsim_reference(queries, docs, offsets).eq(0).all()

    no_docs = offsets[:1]
    assert maxsim_triton(queries, docs, no_docs).shape == (3, 0)
    assert maxsim_reference(queries, docs, no_docs).shape == (3, 0)


def test_documents_past_2_31_elements(device: torch.device) -> None:
    """A document starting past element 2^31 of the packed tokens: int32 addressing wraps."""
    if device.type != "cuda":
        pytest.skip("needs 4 GiB of float16 tokens; the interpreter would take minutes")
    dim = 64
    lengths = [5, 33]
    queries, tail, tail_offsets, mask = make_batch(
        lengths, dim=dim, dtype=torch.float16, device=device
    )
    skipped = 2**31 // dim + 7  # rows before the documents: their first element is past 2^31
    docs = torch.zeros(skipped + tail.shape[0], dim, dtype=torch.float16, device=device)
    docs[skipped:] = tail

    got = maxsim_triton(queries, docs, tail_offsets + skipped, mask)

    want = maxsim_reference(queries, tail, tail_offsets, mask)
    assert relative_error(got, want) <= TOLERANCE[torch.float16]


def test_reference_and_kernel_agree_with_colpali(device: torch.device) -> None:
    # colpali-engine pads documents with zero vectors and takes the max over the padding too:
    # right only when similarities are >= 0, so the vectors here are non-negative. (With signed
    # vectors a shorter document's score is lifted to 0 per token: the bug -inf padding avoids.)
    # It has no query mask, so queries are all of one length and unmasked.
    queries, docs, offsets, _ = make_batch(mixed_lengths()[2:], device=device)
    queries, docs = queries.abs(), docs.abs()
    bounds = offsets.tolist()
    per_doc = [docs[a:b] for a, b in itertools.pairwise(bounds)]

    colpali = BaseVisualRetrieverProcessor.score_multi_vector(
        list(queries), per_doc, device=device
    ).to(device)

    assert relative_error(maxsim_reference(queries, docs, offsets), colpali) <= 1e-5
    got = maxsim_triton(queries, docs, offsets, block_d=BLOCK_D)
    assert relative_error(got, colpali) <= 1e-5


def test_bad_inputs_are_refused(device: torch.device) -> None:
    queries, docs, offsets, mask = make_batch([3, 4], device=device)
    with pytest.raises(ValueError, match="dim"):
        maxsim_triton(queries, docs[:, :-1], offsets)
    with pytest.raises(ValueError, match="doc_offsets"):
        maxsim_triton(queries, docs, offsets + 1)
    with pytest.raises(ValueError, match="query_mask"):
        maxsim_triton(queries, docs, offsets, mask[:, :-1])
    with pytest.raises(TypeError, match="one dtype"):
        maxsim_triton(queries, docs.half(), offsets)
    with pytest.raises(ValueError, match="block_d"):
        maxsim_triton(queries, docs, offsets, block_d=24)


def test_cpu_tensors_need_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    queries, docs, offsets, _ = make_batch([3, 4])
    with pytest.raises(ValueError, match="maxsim_reference"):
        maxsim_triton(queries, docs, offsets)


def test_interpreter_asked_for_too_late_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    if interpreter_in_process():
        pytest.skip("this process runs triton's interpreter")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    queries, docs, offsets, _ = make_batch([3, 4])
    with pytest.raises(RuntimeError, match="before anything imports triton"):
        maxsim_triton(queries, docs, offsets)


def test_top_documents() -> None:
    scores = torch.tensor([[0.1, -3.0, 2.5, 0.7], [-1.0, -0.5, -2.0, -0.25]])

    best = top_documents(scores, k=2)

    assert best.docs.tolist() == [[2, 3], [3, 1]]
    assert best.scores.tolist() == [[2.5, pytest.approx(0.7)], [-0.25, -0.5]]
    assert top_documents(scores, k=10).docs.shape == (2, 4)


@pytest.mark.parametrize("module", [reference, triton_maxsim])
def test_docstring_examples(module: object) -> None:
    # kernels/ is outside the suite's doctest paths, so its examples run here.
    result = doctest.testmod(module, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_search_reranked_by_the_kernel_matches_qdrant(device: torch.device, tmp_path: Path) -> None:
    """The rerank stage on our kernel gives Qdrant's own results (same pages, same order, scores
    within 1e-4), Qdrant Edge's vectors held on `device`."""
    store = EdgeStore(tmp_path / "qdrant", DIM)
    try:
        check_rerank_paths_agree(store, ResidentVectors(device, scorer=maxsim_triton))
    finally:
        store.close()
