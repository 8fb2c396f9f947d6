"""Exact MaxSim scoring speed: our CPU path vs colpali-engine vs a plain torch einsum.

    python benches/maxsim.py [--docs 1000 10000] [--queries 1 32] [--tokens 1030] [--dim 128]

Same random data for every method in a run (unit vectors, fp32, documents of `tokens` x `dim`,
queries of 32 tokens). Reports seconds, GFLOP/s (2 x query tokens x dim per document token),
the ratio to colpali-engine's score_multi_vector, and the fraction of the GFLOP/s one large
plain fp32 matrix product reaches in the same run (the practical ceiling here), with peak RSS.
On a machine with CUDA it also times the Triton kernel. Checks every method agrees first.
Our CPU path runs both ways: float32 products, and the bf16 screen settled in float32 (the
default where the CPU multiplies bf16 natively; see vdr.kernels.cpu).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vdr.kernels import maxsim_cpu, maxsim_triton

from index_throughput import machine

QUERY_TOKENS = 32
EINSUM_BATCH = 128  # documents per einsum, as colpali-engine batches them


def timed(run: Callable[[], torch.Tensor], repeats: int = 3) -> tuple[float, torch.Tensor]:
    best, result = float("inf"), torch.empty(0)
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def einsum_scores(queries: torch.Tensor, docs3d: torch.Tensor) -> torch.Tensor:
    out = [
        torch.einsum("qnd,bsd->qbns", queries, docs3d[i : i + EINSUM_BATCH]).amax(3).sum(2)
        for i in range(0, len(docs3d), EINSUM_BATCH)
    ]
    return torch.cat(out, dim=1)


def _on_gpu(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    scores = maxsim_triton(*inputs)
    torch.cuda.synchronize()
    return scores.cpu()


def matmul_gflops(dim: int) -> float:
    a, b = torch.randn(4096, dim), torch.randn(dim, 1 << 16)
    seconds, _ = timed(lambda: a @ b)
    return 2 * a.shape[0] * dim * b.shape[1] / seconds / 1e9


def real_vectors(index_dir: Path, set_dir: Path) -> None:
    """Our CPU path both ways on an index's real page vectors and a set's real queries, whose
    similarities are not random: more document tokens sit near each maximum."""
    from vdr import Index
    from vdr.eval import load_set

    with Index(index_dir, rerank="qdrant") as index:
        pages = [
            torch.tensor(full, dtype=torch.float32)[: int(payload["n_vectors"]) or 1]
            for payload, full in index.store._scroll(["n_vectors"], with_full=True)
        ]
        texts = [q.text for q in load_set(set_dir)[0]]
        tokens = [torch.from_numpy(e.scoring_vectors()) for e in index.embed_queries(texts)]
    queries = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence(
        [torch.ones(len(t), dtype=torch.bool) for t in tokens], batch_first=True
    )
    docs = torch.cat(pages)
    lengths = torch.tensor([len(p) for p in pages])
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    runs = {
        screen: timed(functools.partial(maxsim_cpu, queries, docs, offsets, mask, screen))
        for screen in (False, True)
    }
    assert torch.allclose(runs[True][1], runs[False][1], rtol=1e-5, atol=1e-4)
    base = runs[False][0]
    print(
        f"\nReal vectors: {len(pages)} pages of {index_dir} ({len(docs):,} tokens of "
        f"{docs.shape[1]}), {len(texts)} queries of {set_dir} ({int(mask.sum()):,} tokens)\n"
    )
    print("| method | seconds | vs float32 products |")
    print("|---|---:|---:|")
    for screen, (seconds, _) in runs.items():
        name = "bf16 screen" if screen else "float32 products"
        print(f"| vdr maxsim_cpu, {name} | {seconds:.3f} | {base / seconds:.1f}x |")


def main() -> None:
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--tokens", type=int, default=1030)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument(
        "--index",
        type=Path,
        help="also score every page of this index (its real vectors) against the queries of "
        "--set, both ways of our CPU path",
    )
    parser.add_argument("--set", type=Path, default=Path("../shared/bench/dev"))
    args = parser.parse_args()
    ceiling = matmul_gflops(args.dim)
    print(
        f"MaxSim, {datetime.date.today()}, {machine()}; plain fp32 matmul: {ceiling:.0f} GFLOP/s\n"
    )
    print("| queries x docs | method | seconds | GFLOP/s | vs colpali | of matmul |")
    print("|---|---|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    for n_docs in args.docs:
        docs3d = torch.nn.functional.normalize(
            torch.randn(n_docs, args.tokens, args.dim, generator=generator), dim=-1
        )
        docs = docs3d.reshape(-1, args.dim)
        offsets = torch.arange(0, n_docs * args.tokens + 1, args.tokens, dtype=torch.int64)
        for n_queries in args.queries:
            if n_queries * n_docs > 32 * 1000 and n_docs > 1000:
                continue  # 32 x 10,000 is not in the plan and takes minutes per method
            queries = torch.nn.functional.normalize(
                torch.randn(n_queries, QUERY_TOKENS, args.dim, generator=generator), dim=-1
            )
            methods: dict[str, Callable[[], torch.Tensor]] = {
                "colpali-engine score_multi_vector": functools.partial(
                    BaseVisualRetrieverProcessor.score_multi_vector,
                    list(queries),
                    list(docs3d),
                    device="cpu",
                ),
                "torch einsum (batches of 128)": functools.partial(einsum_scores, queries, docs3d),
                "vdr maxsim_cpu, float32 products": functools.partial(
                    maxsim_cpu, queries, docs, offsets, bf16_screen=False
                ),
                "vdr maxsim_cpu, bf16 screen": functools.partial(
                    maxsim_cpu, queries, docs, offsets, bf16_screen=True
                ),
            }
            if torch.cuda.is_available():
                on_gpu = (queries.cuda(), docs.cuda(), offsets.cuda())
                methods["vdr maxsim_triton (CUDA)"] = functools.partial(_on_gpu, on_gpu)
            flops = 2 * n_queries * QUERY_TOKENS * args.dim * n_docs * args.tokens
            results = {name: timed(run) for name, run in methods.items()}
            reference = results["vdr maxsim_cpu, float32 products"][1]
            for name, (_, scores) in results.items():
                assert torch.allclose(scores.float(), reference, atol=1e-3), name
            base = results["colpali-engine score_multi_vector"][0]
            for name, (seconds, _) in results.items():
                rate = flops / seconds / 1e9
                print(
                    f"| {n_queries} x {n_docs:,} | {name} | {seconds:.3f} | {rate:.0f} "
                    f"| {base / seconds:.1f}x | {rate / ceiling:.0%} |"
                )
    if args.index:
        real_vectors(args.index, args.set)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
