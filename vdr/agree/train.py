"""`vdr train CONFIG`: LoRA training of a colpali-engine retriever with AGREE's losses.

Each step takes `batch_size` (query, positive page) pairs; the other pages of the batch are the
negatives. loss = global + lambda * local, where the local term (none for "global") compares the
teacher's map of each pair, read from the annotation folder, with the retriever's own map
(losses.py). Pages are reduced to their image tokens for both terms, as vdr indexes them.

The output folder holds
    config.json      the run's configuration; a resumed run must match it (max_steps aside)
    log.jsonl        one line per logged step: step, epoch, global, local, loss, lr, seconds
    checkpoint/      the newest checkpoint: the LoRA adapter and state.pt (step, optimizer,
                     scheduler, RNG states); a run into a folder that has one resumes from it
    adapter/         the adapter at the end of the run, for `vdr index --model OUT/adapter`

Resuming gives the same weights as an uninterrupted run: the data order of each epoch is drawn
from the seed and the epoch number, and the RNG states (LoRA dropout) are restored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vdr.agree.annotate import Annotation, read_annotations
from vdr.agree.data import Pair, load_pairs
from vdr.agree.losses import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOPK_FRACTION,
    LOCAL_LOSSES,
    LocalLoss,
    hardest_mean,
    local_loss_fn,
    student_map,
)
from vdr.errors import VdrError

log = logging.getLogger(__name__)

LOSSES = ("global", *(f"global+{name}" for name in LOCAL_LOSSES))
# colpali-engine's ColQwen2/2.5 LoRA targets: the language model's projections and the
# embedding head; no vision module has "model" in its name, so the vision tower stays frozen.
COLPALI_LORA_TARGETS = (
    r"(.*(model).*(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj).*$"
    r"|.*(custom_text_proj).*$)"
)
CHECKPOINT_DIR, ADAPTER_DIR, LOG_FILE, CONFIG_FILE = (
    "checkpoint",
    "adapter",
    "log.jsonl",
    "config.json",
)
STATE_FILE = "state.pt"
# Fields that may change when a run is resumed: they change when it stops, not what it learns.
RESUMABLE_CHANGES = ("max_steps", "save_every", "log_every")


@dataclass(frozen=True)
class TrainConfig:
    """A training run, read from a TOML or YAML file (keys as below; `lambda` for lambda_).

    retriever:        colpali-engine checkpoint to train (hub id or directory; not an adapter)
    data:             training pairs: a BEIR/ViDoRe-style folder or a {query, image} JSONL
    output_dir:       where checkpoints, the log and the final adapter go
    annotations:      folder written by `vdr agree annotate` for `data`; needed unless loss is
                      "global"
    loss:             "global" (page-level only), "global+cosine" (the paper's best),
                      "global+kl" or "global+topk"
    lambda_:          weight of the local loss (paper: 0.1)
    batch_size:       pairs per step; the in-batch negatives are the batch's other pages
    learning_rate:    AdamW learning rate (paper: 1e-4)
    weight_decay:     AdamW weight decay
    warmup_steps:     linear warm-up steps, then linear decay to 0 over all epochs
    epochs:           passes over the pairs (paper: 3); a last incomplete batch is dropped
    max_steps:        stop after this many steps in all (0: train all epochs); the schedule is
                      the epochs' whatever this is, so a run stopped early resumes exactly
    seed:             seeds the LoRA initialisation, the data order and dropout
    lora_r, lora_alpha, lora_dropout, lora_targets: the LoRA adapter (colpali-engine's
                      ColQwen2.5 recipe: 32, 32, 0.1, language model and embedding head)
    temperature:      softmax temperature of the kl and topk losses (dot products are in
                      [-1, 1]; the paper states none)
    topk_fraction:    share of the teacher's highest patches that are positives for topk
                      (paper: 0.1-0.2)
    selective_fraction: apply the local loss only to this share of each batch's pairs, those
                      whose maps disagree most with the teacher's (the paper's selective
                      supervision, §7.5, keeps 0.25 of the samples; 1: every pair)
    normalize_scores: divide MaxSim scores by the query length in the global loss, as
                      colpali-engine's ColbertPairwiseCELoss does by default
    gradient_checkpointing: recompute activations in the backward pass (GPU memory for time)
    save_every:       steps between checkpoints (one is always written at the end)
    log_every:        steps between log lines
    device, dtype:    as for `vdr index` ("auto": a GPU in bf16 when there is one; fp32 on CPU)
    """

    retriever: str
    data: str
    output_dir: str
    annotations: str | None = None
    loss: str = "global+cosine"
    lambda_: float = 0.1
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    epochs: int = 3
    max_steps: int = 0
    seed: int = 0
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: str = COLPALI_LORA_TARGETS
    temperature: float = DEFAULT_TEMPERATURE
    topk_fraction: float = DEFAULT_TOPK_FRACTION
    selective_fraction: float = 1.0
    normalize_scores: bool = True
    gradient_checkpointing: bool = False
    save_every: int = 500
    log_every: int = 1
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise VdrError(f"loss must be one of {', '.join(LOSSES)}, not '{self.loss}'")
        if self.loss != "global" and not self.annotations:
            raise VdrError(f"loss '{self.loss}' needs an annotations folder")
        if self.batch_size < 2:
            raise VdrError("batch_size must be at least 2: the negatives are the batch's pages")
        if not 0 < self.selective_fraction <= 1:
            raise VdrError("selective_fraction must be in (0, 1]")
        if min(self.epochs, self.save_every, self.log_every) < 1 or self.max_steps < 0:
            raise VdrError("epochs, save_every and log_every must be positive, max_steps >= 0")

    @property
    def local(self) -> str | None:
        """The local loss's name, None for "global"."""
        return self.loss.partition("+")[2] or None


def load_config(path: Path) -> TrainConfig:
    """A TrainConfig from a .toml, .yaml or .yml file; unknown keys are refused by name."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise VdrError(f"cannot read '{path}' ({error.strerror})") from error
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib

        values = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        raise VdrError(f"'{path}' is not a .toml, .yaml or .yml file")
    if "lambda" in values:
        values["lambda_"] = values.pop("lambda")
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise VdrError(f"'{path.name}' has unknown keys: {', '.join(unknown)}")
    try:
        return TrainConfig(**values)
    except TypeError as error:  # a required key is missing
        raise VdrError(f"'{path.name}': {error}") from error


@dataclass(frozen=True)
class TrainResult:
    step: int  # optimizer steps taken in all, this run and the ones it resumed
    started_at: int  # the step this run resumed from (0 for a fresh run)
    adapter: Path
    last: dict[str, float]  # the last step's global, local and total loss


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train (or resume) the run `config` describes; returns where its adapter is."""
    from colpali_engine.loss import ColbertPairwiseCELoss
    from peft import LoraConfig, get_peft_model

    from vdr.encoders.colpali import ColPaliEncoder, resolve_checkpoint

    pairs = load_pairs(Path(config.data))
    targets = _targets(config, pairs)
    out = Path(config.output_dir)
    _claim(out, config)  # only once the data is known good: a failed start claims nothing
    checkpoint = resolve_checkpoint(config.retriever)
    if checkpoint.adapter is not None:
        raise VdrError(f"train from a base checkpoint; '{config.retriever}' is a LoRA adapter")
    torch.manual_seed(config.seed)
    encoder = ColPaliEncoder(checkpoint, config.device, config.dtype)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets,
        task_type="FEATURE_EXTRACTION",
    )
    if config.gradient_checkpointing:
        encoder.model.activation_checkpointing_enable()
        # only LoRA weights learn: the recomputed layers need inputs that require grads
        encoder.model.enable_input_require_grads()
    model = get_peft_model(encoder.model, lora)
    model.peft_config["default"].base_model_name_or_path = checkpoint.name
    model.train()

    steps_per_epoch = len(pairs) // config.batch_size
    if steps_per_epoch == 0:
        raise VdrError(f"{len(pairs)} pairs do not fill one batch of {config.batch_size}")
    scheduled = config.epochs * steps_per_epoch
    total = min(scheduled, config.max_steps) if config.max_steps else scheduled
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _schedule(step, config.warmup_steps, scheduled)
    )
    step = _resume(out / CHECKPOINT_DIR, model, optimizer, scheduler)
    started_at = step
    global_loss = ColbertPairwiseCELoss(normalize_scores=config.normalize_scores)
    local_loss = (
        local_loss_fn(config.local, config.temperature, config.topk_fraction)
        if config.local
        else None
    )
    # colpali-engine pads on the left; a left pad token attends to nothing (fully masked row),
    # comes out NaN, and NaN * 0 in the backward pass poisons every gradient. On the right,
    # pads only follow the real tokens, which (causal attention) come out exactly as unpadded.
    encoder.processor.tokenizer.padding_side = "right"
    batches = _Batches(pairs, targets, encoder, config.batch_size, config.seed, steps_per_epoch)
    last: dict[str, float] = {}
    started = time.perf_counter()
    with (
        tqdm(total=total, initial=step, disable=not progress, desc="train", unit="step") as bar,
        (out / LOG_FILE).open("a") as log_file,
    ):
        for batch in batches.iterate(step, total):
            queries, docs = batch.queries.to(encoder.device), batch.docs.to(encoder.device)
            query_vectors = model(**queries)  # [B, Lq, 128], padding rows zero
            doc_vectors = model(**docs) * batch.image_mask.to(encoder.device).unsqueeze(-1)
            terms = {"global": global_loss(query_vectors, doc_vectors)}
            if local_loss is not None:
                query_mask = queries["attention_mask"].bool()
                per_pair = _local_terms(local_loss, batch, query_vectors, query_mask, doc_vectors)
                terms["local"] = hardest_mean(per_pair, config.selective_fraction)
            loss = terms["global"] + config.lambda_ * terms.get("local", torch.zeros(()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step = batch.step + 1
            last = {name: value.item() for name, value in terms.items()} | {"loss": loss.item()}
            if not all(math.isfinite(value) for value in last.values()):
                raise VdrError(f"the loss is not finite at step {step}: {last}")
            if step % config.log_every == 0 or step == total:
                line = {"step": step, "epoch": batch.epoch, **last}
                line["lr"] = scheduler.get_last_lr()[0]
                line["seconds"] = round(time.perf_counter() - started, 3)
                log_file.write(json.dumps(line) + "\n")
                log_file.flush()
            bar.update(1)
            bar.set_postfix({name: f"{value:.4f}" for name, value in last.items()})
            if step % config.save_every == 0 and step < total:
                _save_checkpoint(out / CHECKPOINT_DIR, model, optimizer, scheduler, step)
    _save_checkpoint(out / CHECKPOINT_DIR, model, optimizer, scheduler, step)
    adapter = out / ADAPTER_DIR
    model.save_pretrained(str(adapter))
    log.info("step %d: adapter saved to %s", step, adapter)
    return TrainResult(step=step, started_at=started_at, adapter=adapter, last=last)


@dataclass(frozen=True)
class _Batch:
    """One step's inputs, made ready on the CPU.

    queries, docs: the processor's outputs (CPU tensors); docs without "labels"
    image_mask:    [B, L_doc] bool, the docs' image tokens (the only page vectors kept)
    places:        per pair (positions [n] int64 of its patch tokens, patch_index [n] int64,
                   grid); empty without a local loss
    targets:       per pair, the teacher's map on that grid, [rows * cols] float32
    """

    step: int
    epoch: int
    queries: Any
    docs: Any
    image_mask: torch.Tensor
    places: list[tuple[torch.Tensor, torch.Tensor, tuple[int, int]]]
    targets: list[torch.Tensor]


class _Batches:
    """The steps' batches in order, each prepared in a thread while the previous one trains:
    decoding and resizing a batch of page images takes seconds a step, which would leave a GPU
    idle. The thread is the only user of the processor while training runs (a fast tokenizer
    shared between threads can fail with "Already borrowed")."""

    def __init__(
        self,
        pairs: list[Pair],
        targets: dict[str, Annotation],
        encoder: Any,
        batch_size: int,
        seed: int,
        steps_per_epoch: int,
    ) -> None:
        self.pairs, self.targets, self.encoder = pairs, targets, encoder
        self.batch_size, self.seed, self.steps_per_epoch = batch_size, seed, steps_per_epoch

    def iterate(self, start: int, stop: int) -> Iterator[_Batch]:
        """Batches of steps start..stop-1."""
        if start >= stop:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.prepare, start)
            for step in range(start, stop):
                ready = pending.result()
                if step + 1 < stop:
                    pending = pool.submit(self.prepare, step + 1)
                yield ready

    def prepare(self, step: int) -> _Batch:
        from vdr.encoders.colpali import patch_geometry

        epoch, position = divmod(step, self.steps_per_epoch)
        order = _epoch_order(len(self.pairs), self.seed, epoch)
        chosen = order[position * self.batch_size : (position + 1) * self.batch_size]
        pairs = [self.pairs[i] for i in chosen.tolist()]
        processor, family = self.encoder.processor, self.encoder.family
        queries = processor.process_queries([pair.query for pair in pairs])
        docs = processor.process_images([pair.image() for pair in pairs])
        docs.pop("labels", None)  # PaliGemma's processor adds them
        image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        places, targets = [], []
        if self.targets:
            for i, pair in enumerate(pairs):
                positions, patch_index, grid = patch_geometry(processor, family, docs, i)
                places.append(
                    (torch.as_tensor(positions), torch.as_tensor(patch_index).long(), grid)
                )
                targets.append(torch.as_tensor(self.targets[pair.id].target_on(grid)).flatten())
        image_mask = docs["input_ids"] == image_token
        return _Batch(step, epoch, queries, docs, image_mask, places, targets)


def _local_terms(
    local_loss: LocalLoss,
    batch: _Batch,
    query_vectors: torch.Tensor,
    query_mask: torch.Tensor,
    doc_vectors: torch.Tensor,
) -> torch.Tensor:
    """The local loss of each of the batch's pairs (each a positive pair).

    query_vectors: [B, Lq, dim], query_mask [B, Lq] bool (the tokens that count in scoring)
    doc_vectors:   [B, Ld, dim]
    returns:       [B] float32, on the vectors' device
    """
    device = doc_vectors.device
    per_pair = []
    for i, ((positions, patch_index, grid), target) in enumerate(
        zip(batch.places, batch.targets, strict=True)
    ):
        scores = student_map(query_vectors[i][query_mask[i]], doc_vectors[i, positions.to(device)])
        student = torch.zeros(grid[0] * grid[1], device=device)
        student = student.index_copy(0, patch_index.to(device), scores)  # grid order
        per_pair.append(local_loss(student, target))
    return torch.stack(per_pair)


def _targets(config: TrainConfig, pairs: list[Pair]) -> dict[str, Annotation]:
    """The annotation of every pair by pair id; all pairs must have one for a local loss."""
    if config.local is None:
        return {}
    annotations = {a.pair.id: a for a in read_annotations(Path(str(config.annotations)))}
    missing = [pair for pair in pairs if pair.id not in annotations]
    if missing:
        raise VdrError(
            f"{len(missing)} of {len(pairs)} pairs have no annotation in '{config.annotations}' "
            f"(e.g. '{missing[0].query}'); run `vdr agree annotate` on the same data"
        )
    return annotations


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The pairs' order in `epoch`: a permutation drawn from (seed, epoch) alone."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def _schedule(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then linear decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _claim(out: Path, config: TrainConfig) -> None:
    """Record the config in a new output folder; refuse one trained with another config."""
    out.mkdir(parents=True, exist_ok=True)
    file = out / CONFIG_FILE
    current = dataclasses.asdict(config)
    if file.exists():
        before = json.loads(file.read_text())
        changed = sorted(
            key
            for key in current.keys() | before.keys()
            if key not in RESUMABLE_CHANGES and before.get(key) != current.get(key)
        )
        if changed:
            raise VdrError(
                f"'{out}' holds a run with another config ({', '.join(changed)} differ); "
                "use another output_dir"
            )
    file.write_text(json.dumps(current, indent=1))


def _save_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, step: int) -> None:
    """Write the checkpoint beside the old one, then swap, so a crash keeps one whole."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
    }
    torch.save(state, partial / STATE_FILE)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def _resume(folder: Path, model: Any, optimizer: Any, scheduler: Any) -> int:
    """Load the checkpoint in `folder` into the model and the optimizer; its step (0: none)."""
    if not (folder / STATE_FILE).exists():
        return 0
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    state = torch.load(folder / STATE_FILE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    log.info("resuming from step %d", state["step"])
    return int(state["step"])
