"""Write BENCHMARKS.md: run each benchmark script and keep what it printed, with its command.

    python benches/report.py                 # every section (an hour or more on 2 cores)
    python benches/report.py --only storage  # re-run some sections, keep the others as they are
    python benches/report.py --use scale=FILE  # a section from what its command printed into FILE

Each section of BENCHMARKS.md is one script's output (its markdown tables, each headed by the
data, date and machine they were measured on) under the exact command that printed it, between
markers that let a section be replaced alone. Nothing in the file is written by hand.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "BENCHMARKS.md"
# name -> (title, the script and its arguments, run from the repository root)
SECTIONS: dict[str, tuple[str, list[str]]] = {
    "quality": (
        "Retrieval quality on the dev set, by search mode",
        ["benches/quality.py"],
    ),
    "index_throughput": (
        "Indexing throughput: text-layer and OCR pages",
        ["benches/index_throughput.py"],
    ),
    "storage": (
        "Storage options: quality, disk and memory per page",
        ["benches/storage.py"],
    ),
    "scale": (
        "Query latency and recall at 1k, 10k and 100k pages",
        [
            "benches/scale.py",
            "--pages",
            "1000",
            "10000",
            "100000",
            "--store-max-pages",
            "10000",
        ],
    ),
    "scale_tokens": (
        "The token first stage in the store: latency and recall at 1k and 10k pages",
        [
            "benches/scale.py",
            "--pages",
            "1000",
            "10000",
            "--candidates",
            "100",
            "400",
            "--token-candidates",
            "50",
            "100",
            "200",
            "--resident-max-gb",
            "0",
        ],
    ),
    "scale_100k": (
        "The token first stage at 100k pages, reranked by the token index itself and by "
        "Qdrant (int8 store; no pooled paths: their HNSW build alone takes ~45 minutes here)",
        [
            "benches/scale.py",
            "--pages",
            "100000",
            "--storage",
            "int8",
            "--candidates",
            "--token-candidates",
            "100",
            "200",
            "300",
            "--truth-queries",
            "62",
            "--resident-max-gb",
            "0",
            "--keep-token-index",
            "/tmp/vdr-scale-tokens-100000",
        ],
    ),
    "token_probes": (
        "Centroids probed per query token at 100k pages (the token index scale_100k kept)",
        ["benches/token_probes.py", "--probes", "4", "8", "16", "32"],
    ),
    "first_stage": (
        "First stages compared, each scored exactly: what the rerank gets to see",
        [
            "benches/first_stage.py",
            "--pages",
            "10000",
            "30000",
            "--candidates",
            "50",
            "100",
            "200",
            "400",
        ],
    ),
    "maxsim": (
        "MaxSim on CPU: our path against colpali-engine and a plain matmul",
        ["benches/maxsim.py", "--docs", "1000", "10000", "--queries", "1", "32"],
    ),
    "rerank": (
        "Exact rerank: Qdrant's against ours",
        ["benches/rerank.py"],
    ),
    "kill_index": (
        "Crash safety: SIGKILL during indexing, re-run, `vdr doctor`",
        ["benches/kill_index.py", "--kills", "20"],
    ),
    "bad_pdfs": (
        "Bad input: a folder of broken, hostile, huge and real-world-damaged PDFs beside good ones",
        ["benches/bad_pdfs.py"],
    ),
    "load_search": (
        "Search under load while another process uploads and deletes",
        ["benches/load_search.py", "--clients", "32", "--seconds", "60"],
    ),
    "no_match": (
        "The no-match threshold: fitted on generated documents, checked on the dev set",
        ["benches/no_match.py"],
    ),
    "figures": (
        "Figure descriptions, component by component: the generated validation set and the dev set",
        ["benches/figures.py"],
    ),
}
HEADER = """# Benchmarks

Every figure below was printed by the script named above it; `python benches/report.py`
re-runs them all and rewrites this file (`--only NAME` re-runs one section). Each table names
the data, the date and the machine it was measured on. On a shared machine absolute times
drift between runs: compare within a table, where rows were measured in the same run.
"""


def marker(name: str, end: bool = False) -> str:
    return f"<!-- {'/' if end else ''}bench:{name} -->"


def run_section(name: str, printed: str | None = None) -> str:
    """A section: its command's output, from running it now unless `printed` is given."""
    title, command = SECTIONS[name]
    if printed is None:
        print(f"running {name}: python {' '.join(command)}", file=sys.stderr)
        printed = subprocess.run(
            [sys.executable, *command], cwd=REPO, check=True, capture_output=True, text=True
        ).stdout.strip()
    return (
        f"{marker(name)}\n## {title}\n\n`python {' '.join(command)}` "
        f"(run {datetime.date.today()})\n\n{printed}\n{marker(name, end=True)}"
    )


def existing_sections(text: str) -> dict[str, str]:
    pattern = re.compile(r"<!-- bench:(\w+) -->.*?<!-- /bench:\1 -->", re.DOTALL)
    return {m.group(1): m.group(0) for m in pattern.finditer(text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="sections to re-run")
    parser.add_argument(
        "--use",
        nargs="+",
        default=[],
        metavar="NAME=FILE",
        help="take these sections from files their exact command printed (a long run made "
        "apart, e.g. the 100k-page scale run) instead of running them",
    )
    args = parser.parse_args()
    sections = existing_sections(OUT.read_text()) if OUT.exists() else {}
    given = dict(item.split("=", 1) for item in args.use)
    for name, file in given.items():
        if name not in SECTIONS:
            parser.error(f"no section {name!r}; sections: {', '.join(SECTIONS)}")
        sections[name] = run_section(name, Path(file).read_text().strip())
    write(sections)
    for name in args.only or ([] if given else list(SECTIONS)):
        sections[name] = run_section(name)
        write(sections)  # after every section: a long run that fails late keeps what it measured


def write(sections: dict[str, str]) -> None:
    body = "\n\n".join(sections[n] for n in SECTIONS if n in sections)
    OUT.write_text(f"{HEADER}\n{body}\n")


if __name__ == "__main__":
    main()
