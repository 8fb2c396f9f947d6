"""The `vdr agree annotate`, `vdr agree report` and `vdr train` commands: arguments in, library
calls, printed results out (vdr/cli.py registers them with `add_commands`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction, dtypes: tuple[str, ...]) -> None:
    """Add `agree` (with annotate and report) and `train` to vdr's subcommands."""

    def device_flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--device", default=os.environ.get("VDR_DEVICE", "auto"))
        parser.add_argument("--dtype", default=os.environ.get("VDR_DTYPE", "auto"), choices=dtypes)
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")

    agree = commands.add_parser("agree", help="AGREE: teacher attention maps for training.")
    steps = agree.add_subparsers(dest="agree_command", required=True, metavar="STEP")
    annotate = steps.add_parser(
        "annotate",
        help="Annotate (query, page) pairs with the teacher's attention maps (resumable).",
    )
    annotate.add_argument("--teacher", required=True, metavar="NAME_OR_DIR")
    annotate.add_argument("--data", required=True, metavar="DATA", help="folder or .jsonl")
    annotate.add_argument(
        "--grid-from", required=True, metavar="RETRIEVER", help="retriever whose grid to pool to"
    )
    annotate.add_argument("--out", required=True, metavar="DIR")
    annotate.add_argument(
        "--layers", type=_indices, help="comma-separated layers, negative from the end (all)"
    )
    annotate.add_argument("--heads", type=_indices, help="comma-separated heads (all)")
    annotate.add_argument(
        "--max-image-tokens", type=int, default=2048, metavar="N", help="teacher resolution"
    )
    annotate.add_argument("--batch-size", type=int, default=4, metavar="N")
    device_flags(annotate)
    annotate.set_defaults(run=_annotate)

    report = steps.add_parser(
        "report", help="Grounding metric: does a retriever's map agree with the teacher's?"
    )
    report.add_argument("--model", required=True, metavar="NAME_OR_DIR", help="retriever")
    report.add_argument("--annotations", required=True, metavar="DIR", help="held-out pairs")
    report.add_argument("--limit", type=int, metavar="N", help="only the first N pairs")
    report.add_argument("--top-fraction", type=float, default=0.1, metavar="F")
    device_flags(report)
    report.set_defaults(run=_report)

    train = commands.add_parser(
        "train", help="Train a retriever with AGREE from a TOML or YAML config (resumes)."
    )
    train.add_argument("config", metavar="CONFIG")
    train.add_argument("--json", action="store_true", help="machine-readable output")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)


def _indices(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,1,-1, not '{text}'") from None


def _annotate(args: argparse.Namespace) -> int:
    from vdr.agree.annotate import annotate, retriever_grid
    from vdr.agree.data import load_pairs
    from vdr.agree.teacher import Teacher
    from vdr.encoders import canonical_name

    pairs = load_pairs(Path(args.data))
    teacher = Teacher(
        args.teacher, args.layers, args.heads, args.max_image_tokens, args.device, args.dtype
    )
    report = annotate(
        pairs,
        teacher,
        retriever_grid(args.grid_from),
        Path(args.out),
        grid_from=canonical_name(args.grid_from),  # the same folder however it is written
        batch_size=args.batch_size,
        progress=not (args.quiet or args.json),
    )
    if args.json:
        print(json.dumps({"annotated": report.annotated, "skipped": report.skipped}))
    else:
        print(f"annotated {report.annotated} pairs ({report.skipped} done already) in {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from vdr.agree.annotate import read_annotations
    from vdr.agree.report import grounding
    from vdr.encoders import load_encoder

    annotations = read_annotations(Path(args.annotations))[: args.limit]
    encoder = load_encoder(args.model, args.device, args.dtype)
    result = grounding(encoder, annotations, args.top_fraction, not (args.quiet or args.json))
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    else:
        print(
            f"{result.pairs} pairs: {result.top_share:.3f} of the teacher's mass in the "
            f"retriever's top {result.top_fraction:.0%} patches; map cosine {result.cosine:.3f}"
        )
    return 0


def _train(args: argparse.Namespace) -> int:
    from vdr.agree.train import load_config, train

    config = load_config(Path(args.config))
    result = train(config, progress=not (args.quiet or args.json))
    summary = {"step": result.step, "resumed_from": result.started_at, **result.last}
    if args.json:
        print(json.dumps({**summary, "adapter": str(result.adapter)}))
    else:
        terms = ", ".join(f"{name} {value:.4f}" for name, value in result.last.items())
        print(f"step {result.step} ({terms}); adapter in {result.adapter}")
    return 0
