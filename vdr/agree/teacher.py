"""The AGREE teacher: a Qwen2-VL / Qwen2.5-VL chat model whose attention from the query's tokens
to the page's image tokens says where on the page the answer is (AGREE §4.1, "query-token
attention").

The page comes first and the query after it, in the model's own chat format with its default
system prompt (what Qwen's chat template writes for one user turn holding an image and then
text); the query tokens are the tokens of the query text itself, between <|vision_end|> and
<|im_end|>. Which tokens count, and the chat format, are not stated in the paper.

For each chosen layer the attention weights [heads, query tokens, image tokens] are averaged
over the chosen heads (mean over heads is the paper's likely reading, after Zhang et al. 2025)
and over the query tokens, then the layers are averaged: one value per image token, on the
teacher's merged-token grid (its image_grid_thw / 2). Attention weights are only materialised
by the eager implementation, so the decoder is loaded with it (the vision tower keeps SDPA).

Memory: each layer's weights are reduced by a forward hook as soon as the layer has run, so at
most one layer's [batch, heads, seq, seq] scores are alive (Qwen2.5-VL-7B, 2,048 image tokens:
28 heads x ~2,100^2, ~0.25 GB in bf16 plus ~0.5 GB for eager's float32 softmax, per page)
instead of all 28 layers' (7 GB per page), the price of `output_attentions=True`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vdr.encoders.base import resolve_device
from vdr.encoders.colpali import FAMILIES, download, patch_geometry, torch_dtype
from vdr.errors import UnknownModel, VdrError

DEFAULT_MAX_IMAGE_TOKENS = 2048  # the paper's teacher resolution
QWEN_TOKEN_PIXELS = 28  # one merged Qwen2-VL / Qwen2.5-VL image token covers 28x28 pixels
PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{query}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
_QWEN = next(family for family in FAMILIES if family.geometry == "qwen")


class Teacher:
    """A multimodal LLM that annotates (query, page) pairs with attention maps.

    model:            hub id or local directory of a Qwen2-VL or Qwen2.5-VL chat checkpoint
    layers, heads:    which decoder layers and attention heads to average (0-based; negative
                      counts from the end); None: all of them, the paper's choice
    max_image_tokens: the page is resized to at most this many merged image tokens (the
                      paper: 2,048); None keeps the processor's own setting
    device, dtype:    as for encoders ("auto" is bf16 on a recent GPU, fp32 on CPU)
    """

    def __init__(
        self,
        model: str,
        layers: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
        max_image_tokens: int | None = DEFAULT_MAX_IMAGE_TOKENS,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        local = Path(model).expanduser()
        path = local.absolute() if local.is_dir() else download(model)
        self.name = str(path) if local.is_dir() else model
        self.device = resolve_device(device)
        self.processor = AutoProcessor.from_pretrained(str(path))
        image_processor = self.processor.image_processor
        if max_image_tokens is not None:
            longest = max_image_tokens * QWEN_TOKEN_PIXELS**2
            image_processor.size = {**dict(image_processor.size), "longest_edge": longest}
        self.processor.tokenizer.padding_side = "right"  # causal: the queries never see padding
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(
                str(path),
                dtype=torch_dtype(dtype, self.device),
                # only the decoder's weights are read; the vision tower's full-attention
                # blocks over 8,192 patches would cost ~4 GB a page in eager (fp32 softmax)
                attn_implementation={"text_config": "eager", "vision_config": "sdpa"},
            )
        except (OSError, ValueError) as error:
            raise UnknownModel(f"'{model}' is not a chat model vdr can load ({error})") from error
        if self.model.config.model_type not in ("qwen2_vl", "qwen2_5_vl"):
            raise UnknownModel(
                f"the teacher must be a Qwen2-VL or Qwen2.5-VL model, not "
                f"'{self.model.config.model_type}'"
            )
        self.model.eval().to(self.device)
        self.decoder_layers = list(self.model.get_decoder().layers)
        n_layers = len(self.decoder_layers)
        n_heads = int(self.model.config.get_text_config().num_attention_heads)
        self.layers = _checked("layer", layers, n_layers)
        self.heads = _checked("head", heads, n_heads)

    def settings(self) -> dict[str, Any]:
        """What changes the maps: recorded with an annotation run."""
        return {
            "teacher": self.name,
            "layers": self.layers,
            "heads": self.heads,
            "max_image_tokens": self.processor.image_processor.size["longest_edge"]
            // QWEN_TOKEN_PIXELS**2,
            "prompt": PROMPT,
        }

    def maps(self, queries: Sequence[str], images: Sequence[Image.Image]) -> list[np.ndarray]:
        """One attention map per (query, image) pair, computed in one batch.

        returns: [rows, cols] float32 per pair on the teacher's grid for that page; values are
                 attention mass (a token's share of a query token's attention, averaged), so
                 they sum to less than 1 (the rest goes to text and special tokens)
        """
        texts = [PROMPT.format(query=query) for query in queries]
        batch = self.processor(text=texts, images=list(images), padding=True, return_tensors="pt")
        end_id = self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        vision_end_id = self.processor.tokenizer.convert_tokens_to_ids("<|vision_end|>")
        spans = []  # per pair: (query token positions, image token positions, grid)
        for i in range(len(texts)):
            ids = batch["input_ids"][i]
            image_positions, _, grid = patch_geometry(self.processor, _QWEN, batch, i)
            start = int(torch.nonzero(ids == vision_end_id).flatten()[-1]) + 1
            ends = torch.nonzero(ids == end_id).flatten()
            end = int(ends[ends >= start][0])
            if end == start:
                raise VdrError(f"query {i} has no tokens")
            rows = torch.arange(start, end, device=self.device)
            spans.append((rows, torch.as_tensor(image_positions, device=self.device), grid))
        sums = [torch.zeros(len(image), dtype=torch.float32) for _, image, _ in spans]
        heads = torch.as_tensor(self.heads, device=self.device)

        def reduce(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            weights = output[1]  # [batch, heads, seq, seq]
            if weights is None:
                raise VdrError("the teacher returned no attention weights (eager attention off?)")
            for i, (rows, cols, _) in enumerate(spans):
                block = weights[i, heads][:, rows][:, :, cols]
                sums[i] += block.float().mean(dim=(0, 1)).cpu()

        hooks = [
            self.decoder_layers[layer].self_attn.register_forward_hook(reduce)
            for layer in self.layers
        ]
        try:
            with torch.inference_mode():
                self.model(**batch.to(self.device), use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
        return [
            (total / len(self.layers)).reshape(grid).numpy()
            for total, (_, _, grid) in zip(sums, spans, strict=True)
        ]


def _checked(what: str, chosen: Sequence[int] | None, count: int) -> list[int]:
    """`chosen` (negative from the end) as sorted non-negative indices; all when None."""
    if chosen is None:
        return list(range(count))
    out = sorted({index % count for index in chosen if -count <= index < count})
    if len(out) != len(set(chosen)) or not out:
        raise VdrError(f"the teacher has {count} {what}s (0 to {count - 1}); got {list(chosen)}")
    return out
