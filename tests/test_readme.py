"""The README's Python example runs as written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from vdr.encoders.textgrid import TextGridEncoder

from conftest import REPO


def test_readme_python_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder: TextGridEncoder
) -> None:
    del encoder  # shared with the example's Index through load_encoder's cache
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks, "README.md has no python example"
    shutil.copytree(REPO / "samples", tmp_path / "samples")
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "my-index" / "vdr.json").exists()
