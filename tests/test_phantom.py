"""The synthetic H&E phantom: structure, determinism, and grade differences that overlap."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liverfuse import phantom

TINY = (48, 40)  # keeps whole-phantom tests to about a second


def _render(seed: int, ci: int, k: int, j: int = 0, size=(167, 139)) -> np.ndarray:
    look = phantom._patient_look(seed, ci, k)
    return phantom.render(look, np.random.default_rng(np.random.SeedSequence([seed, ci, k, j])), size)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The whole phantom at a tiny size, through the cache (generated once per test run)."""
    return phantom.ensure(tmp_path_factory.mktemp("cache"), seed=0, size=TINY)


@pytest.fixture()
def few_patients(monkeypatch):
    """Shrink the phantom to one patient per grade, for tests of the machinery rather than the content."""
    monkeypatch.setattr(phantom, "PATIENTS", {"poorly": 1, "moderately": 1, "well": 1})


def test_structure_matches_paper(tiny):
    assert phantom.CLASSES == ("poorly", "moderately", "well")
    assert phantom.PATIENTS == {"poorly": 24, "moderately": 27, "well": 22}
    assert sorted(p.name for p in tiny.iterdir() if p.is_dir()) == sorted(phantom.CLASSES)
    for grade, n in phantom.PATIENTS.items():
        patients = sorted((tiny / grade).iterdir())
        assert len(patients) == n
        for p in patients:
            assert p.name.startswith(f"{grade}-p")
            assert len(list(p.glob("*.png"))) == phantom.IMAGES_PER_PATIENT
    assert len(list(tiny.glob("*/*/*.png"))) == 438
    with Image.open(next(tiny.glob("*/*/*.png"))) as im:
        assert im.mode == "RGB" and im.size == TINY


def test_same_seed_same_bytes(tiny, tmp_path):
    again = phantom.generate(tmp_path / "b", seed=0, size=TINY, progress=False)
    assert _digests(again) == _digests(tiny)


def test_other_seed_differs(tiny, tmp_path, few_patients):
    other = _digests(phantom.generate(tmp_path / "c", seed=1, size=TINY, progress=False))
    same = _digests(phantom.generate(tmp_path / "d", seed=0, size=TINY, progress=False))
    ref = _digests(tiny)
    assert len(other) == 18 and all(same[k] == ref[k] for k in same)
    assert all(other[k] != ref[k] for k in other)


def test_render_size_and_dtype():
    img = _render(0, 0, 0, size=(120, 100))
    assert img.shape == (100, 120, 3) and img.dtype == np.uint8
    with pytest.raises(ValueError, match="size"):
        _render(0, 0, 0, size=(10, 10))


def test_paper_size_works():
    img = _render(0, 2, 0, size=phantom.PAPER_SIZE)
    assert img.shape == (1393, 1665, 3)
    assert 60 < img.mean() < 240  # tissue, not a blank or saturated frame


def test_looks_like_he():
    """Pink-dominated (eosin) tissue with blue-purple (haematoxylin) nuclei and pale gaps."""
    img = _render(0, 1, 0).astype(float)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    assert r.mean() > g.mean() and b.mean() > g.mean()  # eosin pink / haematoxylin purple absorb green
    dark = img.mean(-1) < 110
    assert dark.any() and (b[dark] > r[dark]).mean() > 0.5  # nuclei are bluish
    assert (img.mean(-1) > 225).mean() > 0.001  # pale sinusoids / lumina exist


def test_grades_differ_on_average_but_overlap():
    """Nuclear area fraction (dark pixels) is ordered poorly > moderately > well, with overlap."""
    frac = {
        g: [float((_render(0, ci, k).mean(-1) < 115).mean()) for k in range(8)]
        for ci, g in enumerate(phantom.CLASSES)
    }
    mean = {g: np.mean(v) for g, v in frac.items()}
    assert mean["poorly"] > mean["moderately"] > mean["well"]
    assert min(frac["poorly"]) < max(frac["moderately"])
    assert min(frac["moderately"]) < max(frac["well"])


def test_patient_scores_overlap_between_grades():
    pts = phantom.patients(0)
    assert len(pts) == 73 and pts["patient"].is_unique
    s = pts.groupby("grade")["score"]
    assert s.mean()["poorly"] > s.mean()["moderately"] > s.mean()["well"]
    assert s.max()["well"] > s.min()["moderately"] and s.max()["moderately"] > s.min()["poorly"]


def test_patient_effect_images_of_a_patient_share_stain():
    """Images of one patient are closer in colour than images of different patients of the same grade."""
    means = np.array([[_render(0, 1, k, j, size=(96, 80)).reshape(-1, 3).mean(0) for j in range(3)] for k in range(6)])
    within = np.mean([np.linalg.norm(m - m.mean(0), axis=1).mean() for m in means])
    between = np.linalg.norm(means.mean(1) - means.mean(1).mean(0), axis=1).mean()
    assert between > within


def test_ensure_generates_once_atomically(tiny):
    assert tiny.parent.name == "phantom" and tiny.name == phantom.cache_key(0, TINY)
    stamp = (tiny / "phantom.json").stat().st_mtime_ns
    assert phantom.ensure(tiny.parent.parent, seed=0, size=TINY) == tiny
    assert (tiny / "phantom.json").stat().st_mtime_ns == stamp  # not regenerated
    assert not [p for p in tiny.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_ensure_regenerates_incomplete(tmp_path, few_patients):
    root = phantom.ensure(tmp_path, seed=0, size=TINY)
    assert len(list(root.glob("*/*/*.png"))) == 18
    next(root.glob("*/*/*.png")).unlink()  # e.g. a cache cleaned by hand
    assert len(list(phantom.ensure(tmp_path, seed=0, size=TINY).glob("*/*/*.png"))) == 18


@pytest.mark.parametrize("seed, size", [(-1, TINY), (0, (8, 8)), ("x", TINY)])
def test_bad_arguments(seed, size, tmp_path):
    with pytest.raises(ValueError):
        phantom.ensure(tmp_path, seed=seed, size=size)
