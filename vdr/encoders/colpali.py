"""ColPali-family retrievers through colpali-engine: ColPali, ColQwen2, ColQwen2.5,
ColIdefics3 (ColSmol) and ColModernVBert, behind the same contract as the default encoder.

A checkpoint is a hub id or a local directory; its family comes from its config.json; a peft
LoRA adapter directory is loaded onto the base model it names. Only image-patch tokens are
kept for a page (the prompt's text tokens have no place on the page), each tagged with its
patch on the model's own grid, so heatmaps land where the model looked:
- ColPali (PaliGemma): a fixed square grid from the image processor's size;
- ColQwen2/2.5: Qwen's dynamic grid, image_grid_thw divided by the 2x2 spatial merge;
- ColIdefics3/ColModernVBert: the image is cut into tiles, each a square of image_seq_len
  tokens; tiles are placed by their <row_i_col_j> markers and the global tile is dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vdr.encoders.base import (
    Encoder,
    PageEmbedding,
    QueryEmbedding,
    l2_normalise,
    resolve_device,
)
from vdr.errors import UnknownModel, VdrError
from vdr.pages import Page

DEFAULT_BATCH_SIZE = 4
_TILE_MARKER = re.compile(r"<row_(\d+)_col_(\d+)>")


class MissingWeights(VdrError):
    """A checkpoint loaded with parameters left at random initialisation."""


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str  # in colpali_engine.models
    processor_class: str
    model_types: tuple[str, ...]  # config.json "model_type" values of this family
    geometry: str  # "fixed", "qwen" or "tiles": how image tokens map onto the page grid


FAMILIES = (
    Family("colpali", "ColPali", "ColPaliProcessor", ("paligemma",), "fixed"),
    Family("colqwen2", "ColQwen2", "ColQwen2Processor", ("qwen2_vl",), "qwen"),
    Family("colqwen2.5", "ColQwen2_5", "ColQwen2_5_Processor", ("qwen2_5_vl",), "qwen"),
    Family("colidefics3", "ColIdefics3", "ColIdefics3Processor", ("idefics3",), "tiles"),
    Family(
        "colmodernvbert", "ColModernVBert", "ColModernVBertProcessor", ("modernvbert",), "tiles"
    ),
)


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: where its weights are, its family, and its LoRA adapter if any."""

    name: str  # as recorded in an index: the hub id, or the local directory's absolute path
    base: Path  # directory holding the (base) model's config and weights
    family: Family
    adapter: Path | None = None


def resolve_checkpoint(model: str) -> Checkpoint:
    """Find `model` (local directory or hub id) and its family; UnknownModel says how to fix
    what is wrong."""
    local = Path(model).expanduser()
    path = local.absolute() if local.is_dir() else download(model)
    name = str(path) if local.is_dir() else model
    adapter_file = path / "adapter_config.json"
    if adapter_file.exists():
        base_name = json.loads(adapter_file.read_text()).get("base_model_name_or_path")
        if not base_name:
            raise UnknownModel(f"the LoRA adapter at '{path}' does not name its base model")
        base = resolve_checkpoint(base_name)
        return Checkpoint(name=name, base=base.base, family=base.family, adapter=path)
    return Checkpoint(name=name, base=path, family=_family_of(path))


def download(model: str) -> Path:
    """The local snapshot of hub model `model`; UnknownModel saying what to do when offline."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model))
    except Exception as error:  # offline, unknown repo, bad id: all end the same way for a user
        raise UnknownModel(
            f"model '{model}' is not a local directory and cannot be fetched from the model hub "
            f"({type(error).__name__}); download it where the hub is reachable "
            f"(`huggingface-cli download {model} --local-dir DIR`) and pass --model DIR"
        ) from None


def _family_of(path: Path) -> Family:
    config_file = path / "config.json"
    if not config_file.exists():
        raise UnknownModel(f"'{path}' has no config.json: it is not a model checkpoint")
    model_type = json.loads(config_file.read_text()).get("model_type", "")
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = ", ".join(f.name for f in FAMILIES)
    raise UnknownModel(f"'{path}' is a '{model_type}' model; vdr supports {supported}")


class ColPaliEncoder(Encoder):
    """A colpali-engine retriever: pages by their pixels, queries by their tokens.

    device:     "auto" (CUDA when available) or a torch device string.
    dtype:      "auto" (bfloat16 on a CUDA GPU that has it, float32 otherwise), "bf16",
                "fp16" or "fp32". Vectors come back as float32 whatever the compute dtype.
    batch_size: pages or queries per forward pass. Results do not depend on it.
    The model's own image resolution settings (its processor config) are used as they are.
    """

    uses_words = False

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        import colpali_engine.models as models
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the CLI draws its own progress bar

        self.checkpoint = checkpoint
        self.family = checkpoint.family
        self.device = resolve_device(device)
        self.torch_dtype = torch_dtype(dtype, self.device)
        self.batch_size = batch_size
        model_class = getattr(models, self.family.model_class)
        model, loading = model_class.from_pretrained(
            str(checkpoint.base), dtype=self.torch_dtype, output_loading_info=True
        )
        if loading.get("missing_keys"):
            missing = sorted(loading["missing_keys"])
            raise MissingWeights(
                f"the checkpoint at '{checkpoint.base}' lacks {len(missing)} weights "
                f"(e.g. {missing[0]}), which would be left random; refusing to use it"
            )
        if self.family.name == "colpali":
            # PaliGemma checkpoints do not store lm_head (it shares the input embeddings) and
            # colpali-engine does not re-tie it, leaving it on the meta device.
            model.model.tie_weights()
        if checkpoint.adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(checkpoint.adapter)).merge_and_unload()
        self.model = model.eval().to(self.device)
        self.processor = load_processor(checkpoint)
        self.name = checkpoint.name
        self.dim = int(self.model.dim)

    def settings(self) -> dict[str, Any]:
        return {"family": self.family.name}

    def encode_pages(self, pages: Sequence[Page]) -> list[PageEmbedding]:
        out: list[PageEmbedding] = []
        for start in range(0, len(pages), self.batch_size):
            images = [page.image for page in pages[start : start + self.batch_size]]
            batch = self.processor.process_images(images).to(self.device)
            batch.pop("labels", None)  # PaliGemma's processor adds them; a loss is wasted work
            with torch.inference_mode():
                states = self.model(**batch).float()  # [B, L, dim]; padding may hold NaN
            for i in range(len(images)):
                positions, patch_index, grid = patch_geometry(self.processor, self.family, batch, i)
                out.append(
                    PageEmbedding(
                        vectors=l2_normalise(states[i, positions].cpu().numpy()),
                        patch_index=patch_index,
                        grid=grid,
                    )
                )
        return out

    def encode_queries(self, texts: Sequence[str]) -> list[QueryEmbedding]:
        tokenizer = self.processor.tokenizer
        augmentation = tokenizer.convert_tokens_to_ids(self.processor.query_augmentation_token)
        special = set(tokenizer.all_special_ids) | {augmentation}
        prefix_ids = tokenizer(self.processor.query_prefix, add_special_tokens=False)["input_ids"]
        prefix = len(prefix_ids)
        out: list[QueryEmbedding] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            batch = self.processor.process_queries(chunk).to(self.device)
            if self.family.name == "colpali":
                # Without token types transformers masks padded Gemma batches causally and
                # unpadded ones bidirectionally: a query would change with its batch.
                batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
            with torch.inference_mode():
                states = self.model(**batch).float().cpu().numpy()
            for i in range(len(chunk)):
                attention = batch["attention_mask"][i].bool().cpu().numpy()
                ids = batch["input_ids"][i].cpu().numpy()
                words = attention & ~np.isin(ids, list(special))
                if prefix:  # the query prefix's tokens come first among the non-special ones
                    words[np.flatnonzero(words)[:prefix]] = False
                out.append(
                    QueryEmbedding(
                        vectors=l2_normalise(states[i][attention]),
                        tokens=tuple(tokenizer.convert_ids_to_tokens(ids[attention].tolist())),
                        mask=np.ones(int(attention.sum()), dtype=bool),
                        word_mask=words[attention],
                    )
                )
        return out


def load_processor(checkpoint: Checkpoint) -> Any:
    """The checkpoint's colpali-engine processor; an adapter's own when it ships one."""
    import colpali_engine.models as models

    processor_class = getattr(models, checkpoint.family.processor_class)
    folder = checkpoint.adapter if _has_processor(checkpoint.adapter) else checkpoint.base
    return processor_class.from_pretrained(str(folder))


def patch_geometry(
    processor: Any, family: Family, batch: Any, i: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Where page i of a processed batch sits on its patch grid.

    processor: the processor that made `batch` (it names the image token; for "qwen"
               geometry any Qwen2-VL-style processor will do, a teacher's included)
    batch:     the processor's output for a batch of images (input_ids, image_grid_thw, ...)
    returns:   (positions [n] int64 of the page's patch tokens in the sequence, patch_index [n]
               int32 row-major into the grid, grid (rows, cols)); CPU numpy, no model run
    """
    ids = batch["input_ids"][i].cpu()
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    positions = torch.nonzero(ids == image_token).flatten().numpy()
    if family.geometry == "tiles":
        return _tile_geometry(processor, ids, positions)
    if family.geometry == "qwen":
        merge = int(processor.image_processor.merge_size)
        _, height, width = (int(v) for v in batch["image_grid_thw"][i])
        grid = (height // merge, width // merge)
    else:
        side = math.isqrt(len(positions))
        grid = (side, side)
    _check_grid(len(positions), grid)
    return positions, np.arange(len(positions), dtype=np.int32), grid


def _tile_geometry(
    processor: Any, ids: torch.Tensor, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Idefics3-style tiles: each <row_i_col_j> marker is followed by one tile's tokens, a
    square of image_seq_len in row-major order; the global tile (last) is dropped."""
    per_tile = int(processor.image_seq_len)
    side = math.isqrt(per_tile)
    tokens = processor.tokenizer.convert_ids_to_tokens(ids.tolist())
    tiles = [(int(m[1]), int(m[2])) for m in map(_TILE_MARKER.fullmatch, tokens) if m]
    if not tiles:  # the image was not split: one tile, the whole page
        return positions, np.arange(len(positions), dtype=np.int32), (side, side)
    rows, cols = max(r for r, _ in tiles), max(c for _, c in tiles)
    _check_grid(len(positions), (len(tiles) + 1, per_tile))  # the tiles and the global one
    local = positions[: len(tiles) * per_tile]
    within = np.arange(per_tile)
    patch_index = np.concatenate(
        [
            ((r - 1) * side + within // side) * (cols * side) + (c - 1) * side + within % side
            for r, c in tiles
        ]
    ).astype(np.int32)
    return local, patch_index, (rows * side, cols * side)


def _check_grid(n_tokens: int, grid: tuple[int, int]) -> None:
    """Refuse to guess when a processor's image tokens do not fill the grid we derived: a
    misplaced heatmap is worse than an error."""
    if n_tokens != grid[0] * grid[1]:
        raise VdrError(
            f"the page has {n_tokens} image tokens, which do not fill a {grid[0]}x{grid[1]} "
            "grid; this checkpoint's processor is not one vdr knows how to place on the page"
        )


def torch_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        on_gpu = device.startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    choices = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype not in choices:
        raise VdrError(f"dtype must be auto, bf16, fp16 or fp32, not '{dtype}'")
    return choices[dtype]


def _has_processor(folder: Path | None) -> bool:
    """True when an adapter directory ships its own processor files (transformers 4 wrote
    preprocessor_config.json, transformers 5 writes processor_config.json)."""
    return folder is not None and any(
        (folder / name).exists() for name in ("preprocessor_config.json", "processor_config.json")
    )
