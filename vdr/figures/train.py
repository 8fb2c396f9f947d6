"""Train the figure classifier on generated figures and write the weights vdr ships.

    python -m vdr.figures.train [--per-kind N] [--epochs E] [--out FILE] [--seed S]

Draws N images of every kind (vdr.figures.synthetic) for training and N // 5 more, from
another seed, to check it on; trains FigureNet with AdamW and cross-entropy, colour jitter and
greyscale as augmentation; prints accuracy per kind on the held-out images; writes FILE
(default: the shipped vdr/figures/figure_classifier.safetensors).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vdr.figures.classifier import WEIGHTS, FigureNet, save, to_input
from vdr.figures.synthetic import KINDS, labelled_image


def _draw_kind(job: tuple[str, int, int]) -> np.ndarray:
    kind, count, seed = job
    rng = random.Random(f"{seed}-{kind}")
    return np.stack([to_input(labelled_image(rng, kind)) for _ in range(count)])


def draw(per_kind: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, 3, side, side] inputs and [n] labels (index into KINDS), per_kind of each kind,
    drawn in one process per core (matplotlib takes ~0.1 s an image)."""
    jobs = [(kind, per_kind, seed) for kind in KINDS]
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        drawn = pool.map(_draw_kind, jobs)
    labels = [label for label, images in enumerate(drawn) for _ in range(len(images))]
    return torch.from_numpy(np.concatenate(drawn)), torch.tensor(labels)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image: a random brightness and contrast, and greyscale for a third of them."""
    n = len(batch)
    scale = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.4
    shift = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2
    out = ((batch - 0.5) * scale + 0.5 + shift).clamp(0, 1)
    grey = torch.rand(n, generator=generator) < 0.33
    out[grey] = out[grey].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    train_x, train_y = draw(args.per_kind, args.seed)
    test_x, test_y = draw(max(1, args.per_kind // 5), args.seed + 1)
    print(f"drew {len(train_x)} + {len(test_x)} images in {time.perf_counter() - started:.0f} s")
    net = FigureNet(len(KINDS))
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = args.epochs * ((len(train_x) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(train_x), generator=generator)
        total = 0.0
        for start in range(0, len(order), 64):
            picked = order[start : start + 64]
            loss = loss_fn(net(augment(train_x[picked], generator)), train_y[picked])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(picked)
        print(f"epoch {epoch + 1}: loss {total / len(train_x):.3f}")
    net.eval()
    with torch.inference_mode():
        predicted = net(test_x).argmax(dim=1)
    print(f"held-out accuracy: {float((predicted == test_y).float().mean()):.3f}")
    for label, kind in enumerate(KINDS):
        mine = test_y == label
        print(f"  {kind}: {float((predicted[mine] == label).float().mean()):.2f}")
    save(net, list(KINDS), args.out)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
