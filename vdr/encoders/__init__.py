"""Encoders: pages and queries -> multi-vectors on a patch grid (see base.py for the contract)."""

from __future__ import annotations

import functools

from vdr.encoders.base import Encoder, PageEmbedding, QueryEmbedding
from vdr.errors import UnknownModel

DEFAULT_MODEL = "textgrid-minilm"


@functools.cache
def load_encoder(model: str = DEFAULT_MODEL, device: str = "cpu") -> Encoder:
    """The encoder named `model`, loaded once per process and shared (encoders keep no state
    between calls, and a model's weights are most of a process's memory).

    model: "textgrid-minilm" (alias "default"), the offline default encoder.
    """
    if model in (DEFAULT_MODEL, "default"):
        from vdr.encoders.textgrid import TextGridEncoder

        return TextGridEncoder(device=device)
    raise UnknownModel(
        f"unknown model '{model}': this version of vdr supports '{DEFAULT_MODEL}' only "
        "(ColPali-family checkpoints come with colpali-engine support)"
    )


__all__ = ["DEFAULT_MODEL", "Encoder", "PageEmbedding", "QueryEmbedding", "load_encoder"]
