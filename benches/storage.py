"""Retrieval quality, disk and memory per page for each storage option, on a labelled set.

    python benches/storage.py [SET_DIR] [--storages float32 float16 int8 binary]

Indexes SET_DIR/pdfs once (float32, default encoder), then writes the same encoded pages into a
fresh index per storage option (vdr.storage), so every option holds identical pages. Each
option is measured in its own process: nDCG@5 with the default search (hybrid) and with
late interaction alone, the store's segments on disk per page (allocated blocks; Qdrant's
write-ahead log is a fixed ~64 MB preallocation whatever the size, reported on its own), and
the memory the store alone holds once it has answered every query, late and BM25 (resident set
size after minus before opening it, queries already encoded), per page. Prints a markdown table
with the machine noted. Default set: ../shared/bench/dev.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vdr.encoders import load_encoder
from vdr.eval import evaluate, load_set
from vdr.index import Index
from vdr.search import DEFAULT_CANDIDATES, FUSION_DEPTH
from vdr.storage import STORAGES
from vdr.store import PageRecord, open_store

from index_throughput import DEFAULT_PDFS, machine

WAL = "wal"


def allocated_mb(folder: Path) -> float:
    """Disk blocks the files under `folder` take, in MB (sparse preallocation not counted)."""
    return sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file()) / 2**20


def copy_pages(source: Index, target: Index) -> None:
    """Write every page of `source` into `target` as it is (vectors, words, patch map)."""
    n_pages = {d.doc_id: d.n_pages for d in source.documents()}
    page_ids = [p["page_id"] for p in source.store.payloads(["page_id"])]
    for start in range(0, len(page_ids), 32):
        pages = [source.page(p) for p in page_ids[start : start + 32]]
        target.store.upsert(
            [
                PageRecord(
                    doc_id=p.doc_id,
                    doc_path=p.doc_path,
                    page=p.page,
                    n_pages=n_pages[p.doc_id],
                    size=p.size,
                    words=p.words,
                    embedding=p.embedding,
                )
                for p in pages
            ]
        )
    for page_id in page_ids:  # the indexer checks a document's page images too
        target.images.save(page_id, source.page_image(page_id))


def rss_mb() -> float:
    """This process's resident set size now, in MB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def measure(folder: Path, set_dir: Path) -> dict:
    """One storage option's figures, in this (fresh) process."""
    queries, _ = load_set(set_dir)
    encoder = load_encoder()
    embeddings = encoder.encode_queries([q.text for q in queries])
    # Memory first, the store alone: what opening it and answering every query adds.
    before = rss_mb()
    store = open_store(folder / "qdrant", encoder.dim)
    for query, embedding in zip(queries, embeddings, strict=True):
        store.search(embedding.scoring_vectors(), 10, DEFAULT_CANDIDATES)
        store.search_text(query.text, FUSION_DEPTH)
    held = rss_mb() - before
    pages = store.count()
    store.close()
    with Index(folder) as index:
        hybrid = evaluate(index, set_dir)
        late = evaluate(index, set_dir, mode="late")
        storage = index.storage
    segments = allocated_mb(folder / "qdrant") - allocated_mb(folder / "qdrant" / WAL)
    return {
        "storage": storage,
        "pages": pages,
        "ndcg5_hybrid": hybrid["ndcg@5"],
        "ndcg5_late": late["ndcg@5"],
        "by_type": {t: v["ndcg@5"] for t, v in hybrid["by_type"].items()},
        "segments_kb_per_page": segments * 1024 / pages,
        "wal_mb": allocated_mb(folder / "qdrant" / WAL),
        "memory_kb_per_page": held * 1024 / pages,
        "ms_per_query": hybrid["search_seconds_per_query"] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_dir", nargs="?", type=Path, default=DEFAULT_PDFS.parent)
    parser.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES))
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.set_dir)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="vdr-storage-") as scratch:
        source_dir = Path(scratch) / "source"
        with Index(source_dir, storage="float32") as source:
            source.add([args.set_dir / "pdfs"])
            for storage in args.storages:
                with Index(Path(scratch) / storage, storage=storage) as target:
                    copy_pages(source, target)
        for storage in args.storages:
            child = subprocess.run(
                [sys.executable, __file__, str(args.set_dir), "--measure", f"{scratch}/{storage}"],
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    base = rows[0]
    types = sorted(base["by_type"])
    print(
        f"Storage options: default encoder on {args.set_dir} ({base['pages']} pages), "
        f"{datetime.date.today()}, {machine()}\n"
        f"`python benches/storage.py {args.set_dir}`\n"
    )
    print(
        "| storage | nDCG@5 hybrid | nDCG@5 late | "
        + " | ".join(f"{t} @5" for t in types)
        + f" | disk KB/page | {base['storage']} disk / this | memory KB/page | ms/query |"
    )
    print("|---|---:|---:|" + "---:|" * len(types) + "---:|---:|---:|---:|")
    for r in rows:
        by_type = " | ".join(f"{r['by_type'][t]:.3f}" for t in types)
        cut = base["segments_kb_per_page"] / r["segments_kb_per_page"]
        print(
            f"| {r['storage']} | {r['ndcg5_hybrid']:.3f} | {r['ndcg5_late']:.3f} | {by_type} | "
            f"{r['segments_kb_per_page']:.0f} | {cut:.2f} | {r['memory_kb_per_page']:.0f} | "
            f"{r['ms_per_query']:.0f} |"
        )
    print(
        f"\nDisk: the shard's segments (vectors, payload, indexes) per page; the write-ahead "
        f"log adds a fixed {base['wal_mb']:.0f} MB per index whatever its size."
    )


if __name__ == "__main__":
    main()
