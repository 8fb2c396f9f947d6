"""The figure classifier: a small CNN that names the kind of a figure region (bar chart,
line chart, table, photograph, ...), trained here on generated figures (vdr.figures.train).

Its weights ship with vdr (figure_classifier.safetensors, ~0.4 MB); `python -m
vdr.figures.train` makes them again from nothing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

WEIGHTS = Path(__file__).with_name("figure_classifier.safetensors")
INPUT_SIDE = 96  # pixels of the square a region is scaled into


class FigureNet(nn.Module):
    """Four conv blocks (3x3 conv, batch norm, ReLU, 2x2 max pool), global average pooling
    and a linear layer: [batch, 3, INPUT_SIDE, INPUT_SIDE] float in [0, 1] -> [batch, kinds]
    logits."""

    def __init__(self, n_kinds: int, width: int = 24) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, width * 2, width * 4, width * 8):
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, n_kinds)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


def to_input(image: Image.Image) -> np.ndarray:
    """[3, INPUT_SIDE, INPUT_SIDE] float32 in [0, 1]: the image padded to a square with
    white (so a wide chart keeps its shape) and scaled down."""
    image = image.convert("RGB")
    side = max(image.size)
    square = Image.new("RGB", (side, side), "white")
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    square = square.resize((INPUT_SIDE, INPUT_SIDE), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(square, dtype=np.float32).transpose(2, 0, 1) / 255.0


class FigureClassifier:
    """The shipped network and the kinds it names, on CPU.

    kinds: its output order (vdr.figures.synthetic.KINDS when it was trained)."""

    def __init__(self, weights: Path = WEIGHTS) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(weights), "pt") as f:
            self.kinds: tuple[str, ...] = tuple(json.loads(f.metadata()["kinds"]))
        self.net = FigureNet(len(self.kinds))
        self.net.load_state_dict(load_file(str(weights)))
        self.net.eval()

    def predict(self, images: Sequence[Image.Image]) -> list[tuple[str, float]]:
        """(kind, probability) of each image, most probable kind."""
        if not images:
            return []
        batch = torch.from_numpy(np.stack([to_input(image) for image in images]))
        with torch.inference_mode():
            probabilities = self.net(batch).softmax(dim=1)
        best, index = probabilities.max(dim=1)
        return [(self.kinds[int(i)], float(p)) for p, i in zip(best, index, strict=True)]


def save(net: FigureNet, kinds: Sequence[str], path: Path) -> None:
    from safetensors.torch import save_file

    state = {name: tensor.contiguous() for name, tensor in net.state_dict().items()}
    save_file(state, str(path), metadata={"kinds": json.dumps(list(kinds))})


@functools.cache
def shipped() -> FigureClassifier:
    """The classifier of the weights vdr ships, loaded once per process."""
    return FigureClassifier()
