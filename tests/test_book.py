"""The book builds with warnings as errors, executing every notebook (a failing notebook fails the build)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


def test_toc_symlink_and_files_exist():
    assert (ROOT / "book" / "_toc.yml").resolve() == (ROOT / "_toc.yml").resolve()
    for f in _toc_files():
        assert any((ROOT / "book" / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f


@pytest.mark.slow
def test_book_builds_with_warnings_as_errors(tmp_path):
    exe = shutil.which("jupyter-book")
    assert exe, "jupyter-book is not installed: pip install -e '.[book]'"
    out = tmp_path / "site"
    proc = subprocess.run(
        [exe, "build", "book", "-W", "--keep-going", "--path-output", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    html = out / "_build" / "html"
    for f in _toc_files():
        page = html / f"{f}.html"
        assert page.exists(), f"missing page {page}"
    data_page = (html / "notebooks" / "01_data.html").read_text()
    assert "<table" in data_page and "<img" in data_page, "01_data must show its table and sample grid"
    assert "synthetic" in data_page.lower()
