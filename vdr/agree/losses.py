"""The AGREE losses: global (page-level, in-batch) and local (patch-level, positives only).

total = global + lambda * local (lambda = 0.1 in the paper), where
- global: colpali-engine's ColbertPairwiseCELoss, softplus(hardest in-batch negative score -
  positive score) over MaxSim scores;
- local:  agreement between the teacher's map (on the retriever's grid, summing to 1) and the
  retriever's own map of the positive page, `student_map`. Three options:
  cosine (the paper's best), KL, and top-k multi-positive contrastive.

The retriever's map and every local loss take one (query, page) pair: pages of one batch can
have different grids (Qwen's dynamic resolution), so the training loop calls them per pair.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

LOCAL_LOSSES = ("cosine", "kl", "topk")
DEFAULT_TEMPERATURE = 0.05
DEFAULT_TOPK_FRACTION = 0.1
LocalLoss = Callable[[Tensor, Tensor], Tensor]  # (student [n_patches], target [n_patches]) -> 0-d


def student_map(query: Tensor, patches: Tensor) -> Tensor:
    """The retriever's map of a page for a query: for each patch, the mean over query tokens of
    the token-patch dot products (AGREE's s_j; not MaxSim, which would keep one token's view).

    query:   [n_q, dim], the query's token vectors (only the tokens that count in scoring)
    patches: [n_patches, dim], the page's patch vectors in row-major grid order
    returns: [n_patches], float32, on the inputs' device; with unit vectors in [-1, 1]
    """
    return (patches.float() @ query.float().T).mean(dim=1)


def cosine_loss(student: Tensor, target: Tensor) -> Tensor:
    """1 - cos(student, target): scale-free, so raw attention's ~1e-3 values need no rescaling.

    student, target: [n_patches]; returns a 0-d tensor in [0, 2]

    >>> round(float(cosine_loss(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))), 4)
    0.2929
    """
    return 1 - torch.nn.functional.cosine_similarity(student, target.to(student), dim=0)


def kl_loss(student: Tensor, target: Tensor, temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    """KL(target || softmax(student / temperature)).

    The paper writes KL(softmax(target) || softmax(student)); a teacher map summing to 1 has
    values near 1/n_patches, whose softmax is all but uniform, so the normalised map is taken as
    the teacher distribution as it is. The student's dot products lie in [-1, 1], so its softmax
    needs a temperature to be anything but flat (colpali-engine's contrastive losses use 0.02).

    student, target: [n_patches]; target non-negative summing to 1; returns a 0-d tensor >= 0
    """
    log_q = torch.log_softmax(student / temperature, dim=0)
    target = target.to(student)
    # xlogy: patches the teacher gives no mass add 0, not 0 * log 0 = nan
    return (torch.xlogy(target, target) - target * log_q).sum()


def topk_loss(
    student: Tensor,
    target: Tensor,
    fraction: float = DEFAULT_TOPK_FRACTION,
    temperature: float = DEFAULT_TEMPERATURE,
) -> Tensor:
    """Multi-positive contrastive: the teacher's top `fraction` of patches (at least one) are
    the positives, -log(sum_{j in P+} exp(s_j / t) / sum_i exp(s_i / t)).

    The paper gives no temperature (t = 1); with dot products in [-1, 1] that bounds the loss
    away from 0 and its gradients are weak, hence the same temperature as `kl_loss`.

    student, target: [n_patches]; returns a 0-d tensor >= 0
    """
    k = max(1, round(fraction * target.numel()))
    positives = torch.topk(target, k).indices.to(student.device)
    logits = student / temperature
    return torch.logsumexp(logits, dim=0) - torch.logsumexp(logits[positives], dim=0)


def local_loss_fn(name: str, temperature: float, topk_fraction: float) -> LocalLoss:
    """The local loss called `name` (one of LOCAL_LOSSES) with its settings bound."""
    if name == "cosine":
        return cosine_loss
    if name == "kl":
        return lambda student, target: kl_loss(student, target, temperature)
    if name == "topk":
        return lambda student, target: topk_loss(student, target, topk_fraction, temperature)
    raise ValueError(f"unknown local loss '{name}'; expected one of {LOCAL_LOSSES}")


def hardest_mean(losses: Tensor, fraction: float = 1.0) -> Tensor:
    """Mean of the largest `fraction` of per-pair local losses (at least one): AGREE's selective
    supervision (§7.5) supervises only the pairs whose maps disagree most with the teacher's.

    losses: [B], one local loss per pair; returns a 0-d tensor

    >>> round(float(hardest_mean(torch.tensor([0.1, 0.9, 0.5, 0.3]), 0.5)), 4)
    0.7
    """
    k = max(1, round(fraction * losses.numel()))
    return torch.topk(losses, k).values.mean()
