"""Set-up installs what each job needs and no more, and a missing system tool is named with the
package that provides it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, SAMPLES


def planned(target: str) -> str:
    """What `make TARGET` would run on a fresh machine (every prerequisite out of date)."""
    return subprocess.run(
        ["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


def test_the_demo_installs_no_browser_and_the_tests_do() -> None:
    demo, test = planned("demo"), planned("test")
    assert "poppler-utils" in demo and "chromium" not in demo
    assert "poppler-utils" in test and "apt-get install -y -qq chromium" in test


def test_a_missing_poppler_is_named_with_its_debian_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"  # a PATH where no poppler tool (nor anything else) is found
    empty.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "vdr.cli", "index", str(SAMPLES), "--index", str(tmp_path / "i")],
        env={**os.environ, "PATH": str(empty)},
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        "vdr index: pdfinfo is not installed: vdr reads PDFs with poppler (install the Debian "
        "package poppler-utils)"
    )
