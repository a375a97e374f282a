"""The documentation: every relative link in README.md and docs/ resolves (file and, for Markdown, heading
anchor), and every Python block of the README runs on the CPU, in a scratch directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file: lower case, punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", path.read_text())
    headings = re.findall(r"^#+\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", path.read_text()))
            if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_resolve(document):
    broken = []
    for target in relative_links(document):
        file_part, _, anchor = target.partition("#")
        resolved = (document.parent / file_part).resolve() if file_part else document
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{document.relative_to(ROOT)}: broken links {broken}"


def test_readme_python_blocks_run_on_the_cpu(tmp_path):
    blocks = PYTHON_BLOCK.findall((ROOT / "README.md").read_text())
    assert blocks, "the README has no Python block"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    for index, block in enumerate(blocks):
        result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"README Python block {index + 1} failed:\n{block}\n{result.stderr[-3000:]}"
    assert not list(tmp_path.iterdir()), "the README's Python blocks left files behind"
