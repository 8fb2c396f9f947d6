"""`vdr`: the command line. Parses arguments, calls the library, prints; nothing else.

Every command takes the same --index/--model/--qdrant-url flags (or VDR_INDEX, VDR_MODEL,
VDR_QDRANT_URL). Errors print one sentence on stderr and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdr.errors import VdrError
from vdr.figures import DEFAULT_FIGURES, FIGURES
from vdr.storage import DEFAULT_STORAGE, STORAGES

if TYPE_CHECKING:
    from vdr.doctor import Checkup
    from vdr.index import Index
    from vdr.store import Hit

DEFAULT_INDEX = ".vdr-index"
# How long `vdr search` waits for the `vdr serve` that holds the index to answer.
SERVED_SEARCH_TIMEOUT_S = 300
DTYPES = ("auto", "bf16", "fp16", "fp32")
RERANKS = ("auto", "qdrant", "vdr")
POOL_HELP = "keep ~1/N of each page's vectors by hierarchical token pooling (new index only)"
STORAGE_HELP = (
    "how vectors are kept on disk (new index only): float32 (default), float16, int8 (8-bit, "
    "3.8x smaller) or binary (1-bit copy in RAM, rescored with float32)"
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="vdr: %(message)s")
    try:
        return int(args.run(args) or 0)
    except VdrError as error:
        print(f"vdr {args.command}: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # disk full, permissions, ...: the system's words, no traceback
        where = f" ('{error.filename}')" if error.filename else ""
        print(f"vdr {args.command}: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vdr {args.command}: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vdr", description="Visual-document retrieval over PDFs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help_text: str, under: argparse._SubParsersAction | None = None
    ) -> argparse.ArgumentParser:
        sub = (under or commands).add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--index",
            default=os.environ.get("VDR_INDEX"),
            metavar="DIR",
            help=f"index folder (env VDR_INDEX; default {DEFAULT_INDEX})",
        )
        sub.add_argument(
            "--model",
            default=os.environ.get("VDR_MODEL"),
            metavar="NAME_OR_DIR",
            help="encoder (env VDR_MODEL); default: the index's own, textgrid-minilm if new",
        )
        sub.add_argument(
            "--qdrant-url",
            default=os.environ.get("VDR_QDRANT_URL"),
            metavar="URL",
            help="keep vectors in this Qdrant server, not embedded (env VDR_QDRANT_URL)",
        )
        sub.add_argument(
            "--device",
            default=os.environ.get("VDR_DEVICE", "auto"),
            help="torch device for the encoder: auto (a GPU when there is one), cpu, cuda:0, ...",
        )
        sub.add_argument(
            "--dtype",
            default=os.environ.get("VDR_DTYPE", "auto"),
            choices=DTYPES,
            help="compute dtype: auto is bf16 on a recent GPU (and for MiniLM on CPUs with "
            "native bf16), fp32 otherwise",
        )
        sub.add_argument(
            "--rerank",
            default=os.environ.get("VDR_RERANK", "auto"),
            choices=RERANKS,
            help="exact rerank: qdrant (its own), vdr (our MaxSim kernel on page vectors held "
            "in memory), auto (vdr on a GPU they fit on; otherwise qdrant, or in an int8 "
            "index with a current token stage, the token index's own)",
        )
        sub.add_argument(
            "--batch-size",
            type=int,
            default=0,
            metavar="N",
            help="pages or queries per forward pass of a VLM encoder (default 4)",
        )
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    index = command("index", "Index the PDFs in folders or files (changed files are re-indexed).")
    index.add_argument("paths", nargs="+", metavar="PATH")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument(
        "--password",
        action="append",
        default=[],
        metavar="PW",
        help="a password to try on encrypted PDFs (repeatable); poppler is given it on its "
        "command line, which other users of this machine can read",
    )
    index.add_argument(
        "--passwords-file",
        type=Path,
        metavar="FILE",
        help="a file of passwords to try on encrypted PDFs, one per line "
        "(default: $VDR_PDF_PASSWORDS)",
    )
    index.add_argument("--pool-factor", type=int, metavar="N", help=POOL_HELP)
    index.add_argument("--storage", choices=STORAGES, help=STORAGE_HELP)
    index.add_argument(
        "--no-optimize",
        action="store_true",
        help="do not optimize even when due (at scale it takes minutes to an hour): for runs "
        "that will be followed by more, then one `vdr optimize`",
    )
    index.add_argument(
        "--figures",
        choices=FIGURES,
        help="how a new index describes each page's figures: not at all, by kind and colours, "
        f"or with their caption and labels too (default {DEFAULT_FIGURES})",
    )
    index.set_defaults(run=_index)

    search = command("search", "Search indexed pages by text.")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10, help="results to return (default 10)")
    search.add_argument(
        "--doc", action="append", metavar="DOC_ID", help="only this document (repeatable)"
    )
    search.add_argument(
        "--mode",
        choices=("hybrid", "late", "bm25"),
        default="hybrid",
        help="hybrid: MaxSim fused with BM25 over the pages' words (default); late: MaxSim "
        "only; bm25: the words only",
    )
    search.set_defaults(run=_search)

    evaluate = command(
        "eval",
        "Measure retrieval quality on a labelled set (queries.jsonl, qrels.tsv, pdfs/), in "
        "eval's own cache index unless --index is given (VDR_INDEX does not count: the set is "
        "never written into an index it was not handed); an index holding other documents is "
        "refused.",
    )
    evaluate.add_argument("set_dir", metavar="SET_DIR")
    # Where an evaluation writes is only what its own command line says: VDR_INDEX and
    # VDR_QDRANT_URL name the user's index, which the set must not be written into.
    evaluate.set_defaults(index=None, qdrant_url=None)
    evaluate.add_argument("--pool-factor", type=int, metavar="N", help=POOL_HELP)
    evaluate.add_argument("--storage", choices=STORAGES, help=STORAGE_HELP)
    evaluate.add_argument(
        "--compare",
        nargs="+",
        metavar="CONFIG",
        help="evaluate each search configuration and print them side by side; a CONFIG is "
        "key=value pairs joined by commas: mode=hybrid|late|bm25, candidates=N|all, "
        "rerank=auto|qdrant|vdr (e.g. --compare mode=late mode=bm25 mode=hybrid)",
    )
    evaluate.set_defaults(run=_eval)

    docs = commands.add_parser(
        "docs",
        help="List, show or remove the documents of an index.",
        description="List, show or remove the documents of an index (refused files included).",
    )
    verbs = docs.add_subparsers(dest="verb", required=True, metavar="VERB")
    command(
        "list",
        "Every document: id, status (indexed, partial, incomplete, refused), pages, path.",
        verbs,
    ).set_defaults(run=_docs_list)
    show = command("show", "One document: pages indexed of pages, bad pages, message.", verbs)
    show.add_argument("doc_id", metavar="DOC_ID")
    show.set_defaults(run=_docs_show)
    remove = command(
        "rm",
        "Remove documents from the index (their files stay; `vdr index` on their folder adds "
        "them again). An unknown id removes nothing.",
        verbs,
    )
    remove.add_argument("doc_ids", nargs="+", metavar="DOC_ID")
    remove.set_defaults(run=_docs_rm)

    heatmap = command("heatmap", "Draw where the query matched on a page (PNG).")
    heatmap.add_argument("query")
    heatmap.add_argument(
        "--page", required=True, metavar="PAGE_ID", help="a page id from `vdr search`"
    )
    heatmap.add_argument(
        "-o", "--output", metavar="FILE", help="PNG to write (default heatmap-PAGE_ID.png)"
    )
    heatmap.add_argument(
        "--token",
        metavar="I|all",
        help="map of the query's word number I, or 'all' for a grid of every word's map "
        "(default: the whole query, max over its words)",
    )
    heatmap.set_defaults(run=_heatmap)

    doctor = command(
        "doctor",
        "Check that every page has its image and every image its page, and that documents are "
        "whole; exit 1 while problems remain.",
    )
    doctor.add_argument(
        "--repair",
        action="store_true",
        help="delete orphan images and temp files, re-render missing images, re-index "
        "incomplete documents whose files are unchanged",
    )
    doctor.set_defaults(run=_doctor)

    optimize = command(
        "optimize",
        "Merge the embedded store's segments and build its search graphs now (vdr index does "
        "so by itself once enough pages changed); minutes for a large index.",
    )
    optimize.set_defaults(run=_optimize)

    serve = command("serve", "Serve the search API and web page for an index.")
    serve.add_argument("--host", default=os.environ.get("VDR_HOST", "127.0.0.1"))
    # String defaults from the environment go through `type` when serve runs, so a bad value is
    # a usage error of serve, not a traceback of every command.
    serve.add_argument("--port", type=int, default=os.environ.get("VDR_PORT", "8000"))
    serve.add_argument(
        "--max-upload-mb",
        type=int,
        default=os.environ.get("VDR_MAX_UPLOAD_MB", "100"),
        metavar="MB",
        help="largest PDF upload accepted (env VDR_MAX_UPLOAD_MB; default 100)",
    )
    serve.add_argument(
        "--request-timeout",
        type=float,
        default=os.environ.get("VDR_REQUEST_TIMEOUT", "120"),
        metavar="S",
        help="a request still running after S seconds answers 503 (an upload is still indexed "
        "in the background); a body pausing this long answers 408 (env VDR_REQUEST_TIMEOUT; "
        "default 120)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=os.environ.get("VDR_CORS_ORIGINS", "").replace(",", " ").split() or None,
        metavar="ORIGIN",
        help="let web pages from ORIGIN (e.g. https://app.example.com) call the API; "
        "repeatable (env VDR_CORS_ORIGINS, comma-separated; default: none, no CORS headers)",
    )
    serve.add_argument(
        "--absolute-paths",
        action="store_true",
        help="show clients each document's absolute path on this machine (default: the path "
        "relative to the folder indexed; an upload's own name always)",
    )
    serve.set_defaults(run=_serve)

    from vdr.agree.cli import add_commands  # agree annotate, agree report, train

    add_commands(commands, DTYPES)
    return parser


def _open(args: argparse.Namespace, folder: Path | None = None, create: bool = False) -> Index:
    from vdr.index import Index  # imported here so `vdr --help` stays instant

    return Index(
        folder or args.index or DEFAULT_INDEX,
        model=args.model,
        qdrant_url=args.qdrant_url,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        pool_factor=getattr(args, "pool_factor", None),
        storage=getattr(args, "storage", None),
        figures=getattr(args, "figures", None),
        qdrant_api_key=os.environ.get("VDR_QDRANT_API_KEY"),
        create=create,
        rerank=args.rerank,
    )


def _index(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    started = time.perf_counter()
    optimized = None
    with _open(args, create=True) as index:
        report = index.add(
            args.paths, progress=not args.quiet and not args.json, passwords=_passwords(args)
        )
        due = index.optimize_due()  # counts the store's pages: asked once
        if due and args.no_optimize:
            if not args.json:
                print(
                    f"vdr index: {index.pages_since_optimize:,} pages written since the last "
                    "optimize; searches stay slower until `vdr optimize`",
                    file=sys.stderr,
                )
        elif due:
            if not args.json:
                print(
                    f"vdr index: optimizing ({index.pages_since_optimize:,} pages written since "
                    "the last optimize): building the search graphs and the token first stage "
                    "can take minutes",
                    file=sys.stderr,
                )
            optimized = index.optimize()
        total_pages = index.store.count()
    seconds = time.perf_counter() - started
    if args.json:
        print(
            json.dumps(
                {
                    **asdict(report),
                    "seconds": round(seconds, 3),
                    "pages_in_index": total_pages,
                    "optimized": optimized and asdict(optimized),
                }
            )
        )
        return 0
    remembered = set(report.remembered)
    for path, reason in report.skipped:
        again = " (refused before and unchanged since)" if path in remembered else ""
        print(f"vdr index: skipped '{path}'{again}: {reason}", file=sys.stderr)
    for path, original in report.duplicates:
        print(
            f"vdr index: '{path}' has the same content as '{original}' (indexed once)",
            file=sys.stderr,
        )
    print(
        f"indexed {len(report.added)} new or changed files ({report.pages_encoded} pages) in "
        f"{seconds:.1f} s; {len(report.unchanged)} unchanged, {len(report.moved)} moved, "
        f"{len(report.removed)} removed, {len(report.skipped)} skipped; "
        f"{total_pages} pages in the index"
        + (f"; optimized in {optimized.seconds:.1f} s" if optimized else "")
    )
    return 0


def _passwords(args: argparse.Namespace) -> list[str]:
    """The passwords to try on encrypted PDFs: --password, then the lines of --passwords-file
    (or of the file $VDR_PDF_PASSWORDS names)."""
    file = args.passwords_file or (
        Path(os.environ["VDR_PDF_PASSWORDS"]) if os.environ.get("VDR_PDF_PASSWORDS") else None
    )
    if file is None:
        return list(args.password)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise VdrError(f"cannot read the passwords file '{file}': {error}") from None
    return [*args.password, *(line for line in lines if line)]


def _optimize(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vdr.index import TOKEN_INDEX_MIN_PAGES

    with _open(args) as index:
        if not args.json:
            print(
                f"vdr optimize: optimizing {index.path} ({index.store.count():,} pages); this can "
                "take minutes",
                file=sys.stderr,
            )
        done = index.optimize()
        server = index.qdrant_url if index.store.optimizes_itself else None
    if args.json:
        print(json.dumps(asdict(done)))
        return 0
    built = done.token_index
    tokens = (
        f"token first stage built over {built.vectors:,} vectors ({built.centroids:,} "
        f"centroids) in {built.seconds:.1f} s"
        if built
        else f"no token first stage (it starts at {TOKEN_INDEX_MIN_PAGES:,} pages)"
    )
    if server:
        graphs = f"the Qdrant server at {server} builds its search graphs by itself"
    elif done.changed:
        graphs = "segments merged, search graphs built"
    else:
        graphs = "the store was already optimal"
    print(
        f"optimized {done.pages:,} pages ({done.written:,} written since the last optimize) in "
        f"{done.seconds:.1f} s: {graphs}; {tokens}"
    )
    return 0


def _search(args: argparse.Namespace) -> int:
    from vdr.errors import IndexLocked

    try:
        index = _open(args)
    except IndexLocked as locked:
        if locked.server_url is None:
            raise
        hits = _search_served(locked, locked.server_url, args)
        print(
            f"vdr search: asked `vdr serve` at {locked.server_url}, which holds the index",
            file=sys.stderr,
        )
    else:
        with index:
            found = index.search(args.query, k=args.k, doc_ids=args.doc, mode=args.mode)
        hits = [hit_json(h) for h in found]
    if args.json:
        print(json.dumps(hits, indent=1))
        return 0
    if not hits:
        print("no pages found")
    elif all(hit.get("matched") is False for hit in hits):
        print(f"no page matches {args.query!r}; the nearest pages are:")
    for rank, hit in enumerate(hits, 1):
        print(
            f"{rank:>3}. {hit['score']:8.3f}  {Path(hit['doc_path']).name} p.{hit['page']:<4} "
            f"[{hit['page_id']}]"
        )
        if hit.get("evidence") and hit["evidence"]["snippet"]:
            print(f"       {hit['evidence']['snippet']}")
    return 0


def _search_served(locked: VdrError, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The search answered by the `vdr serve` at `url` that holds the index (POST /search,
    with VDR_API_KEY when set), as hit_json gives hits. `locked` is raised when the server
    cannot be reached from here: it says where the server is and what else to do."""
    import urllib.error
    import urllib.request

    if args.doc and len(args.doc) > 1:
        raise VdrError(f"{locked} (its API takes one --doc, not {len(args.doc)})")
    body = {"query": args.query, "k": args.k, "mode": args.mode, "doc": (args.doc or [None])[0]}
    headers = {"Content-Type": "application/json"}
    if os.environ.get("VDR_API_KEY"):
        headers["X-API-Key"] = os.environ["VDR_API_KEY"]
    request = urllib.request.Request(
        f"{url}/search", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=SERVED_SEARCH_TIMEOUT_S) as response:
            results = json.load(response)["results"]
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise VdrError(
                f"the index is served by `vdr serve` at {url}, which wants its API key: set "
                "VDR_API_KEY to it"
            ) from None
        raise VdrError(f"`vdr serve` at {url} answered: {_detail(error)}") from None
    except (urllib.error.URLError, OSError, ValueError):
        raise locked from None
    keys = ("page_id", "doc_id", "doc_path", "page", "score")
    return [
        {
            **{key: hit[key] for key in keys},
            "matched": hit.get("matched"),
            **({"evidence": hit["evidence"]} if hit.get("evidence") else {}),
        }
        for hit in results
    ]


def _detail(error: Any) -> str:
    """The one-line `detail` of the server's JSON error answer (pydantic's list joined)."""
    try:
        detail = json.load(error)["detail"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {error.code}"
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail
        )
    return str(detail)


def hit_json(hit: Hit) -> dict[str, Any]:
    """A hit as JSON: page 1-based, evidence boxes in PDF points from the page's top-left,
    matched as vdr.store.Hit has it (null where the index's encoder has no threshold)."""
    out: dict[str, Any] = {
        "page_id": hit.page_id,
        "doc_id": hit.doc_id,
        "doc_path": hit.doc_path,
        "page": hit.page,
        "score": round(hit.score, 5),
        "matched": hit.matched,
    }
    if hit.evidence is not None:
        out["evidence"] = {
            "snippet": hit.evidence.snippet,
            "words": list(hit.evidence.words),
            "boxes": [[round(v, 2) for v in box] for box in hit.evidence.boxes],
            "size": [round(v, 2) for v in hit.evidence.size],
        }
    return out


def _eval(args: argparse.Namespace) -> int:
    from vdr.eval import SearchConfig, evaluate, format_comparison, format_table

    set_dir = Path(args.set_dir).expanduser().absolute()
    configs = [SearchConfig.parse(text) for text in args.compare or []]
    with _open(args, args.index or _eval_index_folder(set_dir, args), create=True) as index:
        if not configs:
            result = evaluate(index, set_dir, progress=not args.json)
        results = {}
        for config in configs:
            index.use_rerank(config.rerank or args.rerank)
            results[config.label] = evaluate(
                index,
                set_dir,
                progress=not args.json,
                candidates=config.candidates,
                mode=config.mode,
            )
    if args.json:
        print(json.dumps(results if configs else result, indent=1))
    elif configs:
        print(format_comparison(results))
    else:
        print(format_table(result))
        print(
            f"{result['n']} queries, {result['search_seconds_per_query'] * 1000:.0f} ms per query"
        )
    return 0


def _eval_index_folder(set_dir: Path, args: argparse.Namespace) -> Path:
    """eval's own index: a cache folder (under $XDG_CACHE_HOME/vdr/eval, else ~/.cache) per
    evaluation set, model, pool factor, storage and Qdrant URL, so that repeated evals
    re-encode nothing and no user index is written into."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    key = f"{set_dir}|{args.model or ''}|{args.pool_factor or 1}"
    if args.storage not in (None, DEFAULT_STORAGE):  # float32 caches keep their old folders
        key += f"|{args.storage}"
    if args.qdrant_url:
        key += f"|{args.qdrant_url}"
    tag = hashlib.sha256(key.encode()).hexdigest()[:8]
    return cache / "vdr" / "eval" / f"{set_dir.name}-{tag}"


def _docs_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vdr.catalog import document_statuses

    with _open(args) as index:
        statuses = document_statuses(index)
    if args.json:
        print(json.dumps([asdict(s) for s in statuses], indent=1))
        return 0
    if not statuses:
        print("no documents")
    for s in statuses:
        print(f"{s.doc_id}  {s.status:<10} {s.pages_indexed:>5}/{s.pages:<5} {s.path}")
        if s.status != "indexed" and s.message:
            print(f"{'':18}{s.message}")
    return 0


def _docs_show(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vdr.catalog import document_status

    with _open(args) as index:
        status = document_status(index, args.doc_id)
    if args.json:
        print(json.dumps(asdict(status), indent=1))
        return 0
    print(f"{status.doc_id}  {status.path}")
    print(f"  status: {status.status}, {status.pages_indexed} of {status.pages} pages indexed")
    if status.bad_pages:
        print(f"  pages that could not be read: {', '.join(map(str, status.bad_pages))}")
    if status.message:
        print(f"  {status.message}")
    return 0


def _docs_rm(args: argparse.Namespace) -> int:
    doc_ids = list(dict.fromkeys(args.doc_ids))
    with _open(args) as index:
        index.remove(doc_ids)
    if args.json:
        print(json.dumps({"removed": doc_ids}))
    else:
        print(f"removed {len(doc_ids)} document{'s' if len(doc_ids) > 1 else ''}")
    return 0


def _heatmap(args: argparse.Namespace) -> int:
    from vdr.heatmap import overlay, overlay_grid

    with _open(args) as index:
        maps = index.similarity(args.query, args.page)
        page = index.page_image(args.page)
    word_maps = maps.word_maps()
    if args.token == "all":
        image = overlay_grid(page, word_maps, maps.words)
    elif args.token is None:
        image = overlay(page, maps.whole_query(), title=args.query)
    else:
        number = _token_number(args.token, len(maps.words))
        image = overlay(page, word_maps[number], title=maps.words[number])
    output = Path(args.output or f"heatmap-{args.page}.png")
    try:
        image.save(output)
    except OSError as error:
        raise VdrError(f"cannot write '{output}' ({error.strerror or error})") from error
    grid = list(maps.maps.shape[1:])
    if args.json:
        print(json.dumps({"output": str(output), "words": list(maps.words), "grid": grid}))
    else:
        words = ", ".join(f"{i}:{w}" for i, w in enumerate(maps.words))
        print(f"wrote {output} (query words {words}; {grid[0]}x{grid[1]} patch grid)")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vdr.doctor import check, repair

    with _open(args) as index:
        found = check(index)
        repairs = repair(index, found) if args.repair and not found.healthy else None
        after = check(index) if repairs else found
    if args.json:
        report = {"found": asdict(found), "repairs": repairs and asdict(repairs)}
        print(json.dumps({**report, "after": asdict(after), "healthy": after.healthy}, indent=1))
    else:
        print(_checkup_text(found))
        if repairs:
            print(
                f"repaired: {repairs.removed_files} stray files removed, "
                f"{len(repairs.rendered)} images rendered, {len(repairs.reindexed)} documents "
                f"re-indexed"
            )
            for name in repairs.removed_folders:
                print(f"  removed {name}/ (an unfinished or broken token index)")
            if repairs.removed_folders:
                print("  `vdr optimize` builds the token first stage again")
            for what, why in repairs.unrepaired.items():
                print(f"  not repaired: {what}: {why}")
            print(_checkup_text(after))
    return 0 if after.healthy else 1


def _checkup_text(found: Checkup) -> str:
    lines = [
        f"{found.documents} documents, {found.pages} pages, {found.images} page images: "
        + ("healthy" if found.healthy else "problems found")
    ]
    for label, items in [
        ("pages without their image", found.missing_images),
        ("images without their page", found.orphan_images),
        ("temp files", found.temp_files),
        ("documents missing pages", found.incomplete),
        ("pages numbered outside their document", found.misnumbered),
        ("unfinished token index builds", found.unfinished_builds),
    ]:
        if items:
            shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
            lines.append(f"  {len(items)} {label}: {shown}")
    if found.token_stage in _TOKEN_STAGE_NOTES:
        lines.append(
            f"  token first stage {found.token_stage}: {_TOKEN_STAGE_NOTES[found.token_stage]}"
        )
    return "\n".join(lines)


_TOKEN_STAGE_NOTES = {
    "stale": "pages were indexed since it was built, so searches also run the pooled stage "
    "(slower at scale) until `vdr optimize`",
    "broken": "its files are cut short, lost or from an older vdr; searches use the pooled "
    "stage. `--repair` removes it, `vdr optimize` builds it again",
}


def _serve(args: argparse.Namespace) -> int:
    import torch

    if args.request_timeout <= 0:
        raise VdrError(f"--request-timeout must be positive, not {args.request_timeout:g}")
    # Requests are answered on concurrent threads: torch's own intra-op threads on top of them
    # oversubscribe the cores (measured: 2.5 searches/s at 32 clients on 2 cores, 4.2 with one).
    torch.set_num_threads(1)
    # uvicorn shuts down gracefully on SIGTERM, then sends the signal again to whatever handler
    # was there before it: Python's default would kill the process before the index closes.
    signal.signal(signal.SIGTERM, _stop_serving)
    try:
        with _open(args) as index:
            _serve_index(index, args)
    except _StopServing:
        print("vdr serve: stopped", file=sys.stderr)
    return 0


class _StopServing(Exception):
    """SIGTERM reached `vdr serve` after uvicorn's graceful shutdown."""


def _stop_serving(signum: int, frame: object) -> None:
    raise _StopServing


def _serve_index(index: Index, args: argparse.Namespace) -> None:
    import uvicorn

    from vdr.server.app import create_app, server_config

    index.encoder  # load the model now, not on the first search  # noqa: B018
    app = create_app(
        index,
        os.environ.get("VDR_API_KEY"),
        args.max_upload_mb,
        request_timeout_s=args.request_timeout,
        cors_origins=args.cors_origin or (),
        absolute_paths=args.absolute_paths,
    )
    url = server_url(args.host, args.port)
    index.announce_server(url)
    print(f"vdr serving {index.path} on {url}", file=sys.stderr)
    uvicorn.Server(server_config(app, args.host, args.port)).run()


def server_url(host: str, port: int) -> str:
    """The URL clients reach `vdr serve` at; an IPv6 address goes in brackets (RFC 3986)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _token_number(token: str, n_words: int) -> int:
    if not token.isdigit() or int(token) >= n_words:
        raise VdrError(
            f"--token must be 'all' or a word number from 0 to {n_words - 1}, not {token!r}"
        )
    return int(token)


if __name__ == "__main__":
    sys.exit(main())
