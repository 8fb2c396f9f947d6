"""The exact CPU MaxSim path against the torch reference and colpali-engine."""

from __future__ import annotations

import pytest
import torch

import vdr.kernels.cpu as cpu
from vdr.kernels import maxsim, maxsim_reference


def packed(n_docs: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random documents of 0..60 tokens (one empty, one of length 1), packed with offsets."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 61, (n_docs,), generator=generator)
    lengths[3], lengths[5] = 0, 1
    offsets = torch.zeros(n_docs + 1, dtype=torch.int64)
    offsets[1:] = lengths.cumsum(0)
    return torch.randn(int(offsets[-1]), dim, generator=generator), offsets


@pytest.mark.parametrize("bf16_screen", [True, False], ids=["bf16-screen", "float32"])
@pytest.mark.parametrize("chunk_tokens", [1, 97, 1 << 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cpu_path_matches_the_reference(
    chunk_tokens: int, dtype: torch.dtype, bf16_screen: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu, "CHUNK_TOKENS", chunk_tokens)  # chunk edges fall everywhere
    docs, offsets = packed(n_docs=150, dim=64, seed=1)
    queries = torch.randn(4, 9, 64, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[1] = False  # an all-masked query scores 0
    mask[2, 5:] = False
    docs, queries = docs.to(dtype), queries.to(dtype)
    got = cpu.maxsim_cpu(queries, docs, offsets, mask, bf16_screen=bf16_screen)
    expected = maxsim_reference(queries, docs, offsets, mask)
    assert got.dtype == torch.float32 and got.shape == (4, 150)
    assert (got < 0).any()  # unnormalised vectors: negative similarities are in play
    relative = ((got - expected).abs() / expected.abs().clamp(min=1)).max()
    assert relative < 1e-5
    assert (got[1] == 0).all() and (got[:, 3] == 0).all()


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_bf16_screen_finds_maxima_that_bf16_cannot_tell_apart(scale: float) -> None:
    """Document tokens whose similarities differ by ~1e-4, far below bf16's resolution (2^-9
    near 0.5): the screen must still return the float32 maximum, wherever it sits."""
    generator = torch.Generator().manual_seed(4)
    n_docs, length, dim = 40, 50, 128
    query = torch.zeros(1, 1, dim)
    query[0, 0, 0] = 1.0
    docs = torch.randn(n_docs * length, dim, generator=generator) * 0.01
    docs[:, 0] = 0.5 + 1e-4 * torch.rand(n_docs * length, generator=generator)
    offsets = torch.arange(0, n_docs * length + 1, length, dtype=torch.int64)
    query, docs = query * scale, docs * scale
    assert len(set(docs[:, 0].bfloat16().tolist())) <= 2  # bf16 sees (almost) one value
    got = cpu.maxsim_cpu(query, docs, offsets, bf16_screen=True)
    expected = maxsim_reference(query, docs, offsets)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_maxsim_dispatch_uses_the_cpu_path() -> None:
    docs, offsets = packed(n_docs=20, dim=16, seed=5)
    queries = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(
        maxsim(queries, docs, offsets),
        maxsim_reference(queries, docs, offsets),
        rtol=1e-5,
        atol=1e-5,
    )


def test_cpu_path_agrees_with_colpali_engine() -> None:
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    generator = torch.Generator().manual_seed(3)
    # Equal lengths and non-negative vectors: colpali pads with zero vectors, which would
    # beat a token's true best similarity when that is negative.
    docs = torch.rand(120 * 30, 32, generator=generator)
    offsets = torch.arange(0, 120 * 30 + 1, 30, dtype=torch.int64)
    queries = torch.rand(3, 8, 32, generator=generator)
    ours = maxsim(queries, docs, offsets)
    theirs = BaseVisualRetrieverProcessor.score_multi_vector(
        list(queries), list(docs.reshape(120, 30, 32)), device="cpu"
    )
    assert torch.allclose(ours, theirs.float(), rtol=1e-5, atol=1e-4)
