"""Encoders: pages and queries -> multi-vectors on a patch grid (see base.py for the contract)."""

from __future__ import annotations

import functools
from pathlib import Path

from vdr.encoders.base import Encoder, PageEmbedding, QueryEmbedding

DEFAULT_MODEL = "textgrid-minilm"


def canonical_name(model: str) -> str:
    """The name an index records for `model`: local directories as absolute paths."""
    if model in (DEFAULT_MODEL, "default"):
        return DEFAULT_MODEL
    local = Path(model).expanduser()
    return str(local.absolute()) if local.is_dir() else model


@functools.cache
def load_encoder(
    model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto", batch_size: int = 0
) -> Encoder:
    """The encoder named `model`, loaded once per process and shared (encoders keep no state
    between calls, and a model's weights are most of a process's memory).

    model:      "textgrid-minilm" (alias "default"), the offline default encoder; or a
                ColPali-family checkpoint: a hub id or a local directory (a peft LoRA
                adapter directory is loaded onto the base model it names).
    device:     "auto" (CUDA when available, else CPU) or a torch device string.
    dtype:      "auto", "bf16", "fp16" or "fp32" (the default encoder: auto, bf16 or fp32).
    batch_size: pages or queries per forward pass of a VLM; 0 for its default.
    """
    if model in (DEFAULT_MODEL, "default"):
        from vdr.encoders.textgrid import TextGridEncoder

        return TextGridEncoder(device=device, dtype=dtype)
    from vdr.encoders.colpali import DEFAULT_BATCH_SIZE, ColPaliEncoder, resolve_checkpoint

    return ColPaliEncoder(
        resolve_checkpoint(model), device, dtype, batch_size or DEFAULT_BATCH_SIZE
    )


__all__ = [
    "DEFAULT_MODEL",
    "Encoder",
    "PageEmbedding",
    "QueryEmbedding",
    "canonical_name",
    "load_encoder",
]
