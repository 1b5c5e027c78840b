"""Shared fixtures. Tests that need the real H&E tiles in ``../shared/data`` skip when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LIVERFUSE_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def lc25000() -> Path:
    """``../shared/data/lc25000-lung`` (438 real H&E tiles, 73 groups); skips if absent."""
    path = SHARED_DATA / "lc25000-lung"
    if not path.is_dir():
        pytest.skip(
            f"real H&E test data not found at {path}: these tests need the project's ../shared/data "
            "(not part of a user's clone); set LIVERFUSE_SHARED_DATA to point elsewhere"
        )
    return path


@pytest.fixture()
def params(tmp_path):
    """Quick-profile parameters with a private cache and output folder."""
    import liverfuse

    def make(notebook="01_data", **kw):
        kw.setdefault("cache_dir", tmp_path / "cache")
        kw.setdefault("output_dir", tmp_path / "out")
        return liverfuse.setup(notebook, **kw)

    return make
