"""Feature cache: miss, hit, damaged-entry recovery, key sensitivity; pooling arithmetic."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from liverfuse import backbones as B
from liverfuse import features as F

S = 96  # the quick profile's input size


def _prepared(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, S, S, 3), dtype=np.uint8)


def _samples(rows_ops):
    return pd.DataFrame({
        "sample_id": [f"img{r}::{op}" for r, op in rows_ops],
        "row": [r for r, _ in rows_ops],
        "op": [op for _, op in rows_ops],
        "split": ["train"] * len(rows_ops),
        "y": [r % 3 for r, _ in rows_ops],
    })


SAMPLES = [(0, "original"), (1, "original"), (2, "original"), (3, "original"), (0, "flip_h"), (1, "flip_v")]


@pytest.fixture()
def P(params):
    return params("04_feature_levels", weights="auto")


def _entries(fs):
    """Per-sample cache entries (not bundles)."""
    return sorted(p for p in fs.folder.rglob("*.npz") if p.parent.name != "bundles")


def _bundles(fs):
    return sorted((fs.folder / "bundles").glob("*.npz"))


def _drop_bundles(fs):
    for p in _bundles(fs):
        p.unlink()


def test_pool_grid_matches_brute_force_and_global_max():
    rng = np.random.default_rng(1)
    for h in (1, 3, 4, 5, 7, 12, 28):
        x = rng.normal(size=(2, h, h, 3)).astype(np.float32)
        g = F.pool_grid(x)
        gh = min(h, F.GRID)
        assert g.shape == (2, gh, gh, 3)
        for i in range(gh):
            r0, r1 = int(np.floor(i * h / gh)), int(np.ceil((i + 1) * h / gh))
            for j in range(gh):
                c0, c1 = int(np.floor(j * h / gh)), int(np.ceil((j + 1) * h / gh))
                np.testing.assert_array_equal(g[:, i, j], x[:, r0:r1, c0:c1].max(axis=(1, 2)))
        np.testing.assert_array_equal(F.vectors(g), x.max(axis=(1, 2)))


def test_miss_then_hit_then_subset(P):
    prepared, samples = _prepared(), _samples(SAMPLES)
    cold = F.extract(P, None, prepared, samples, "efficientnet_lite0", batch_size=4)
    assert (cold.misses, cold.hits) == (6, 0) and cold.seconds > 0
    assert cold.weights_used == "imagenet"
    assert list(cold.maps) == ["stage4", "stage6", "full"]
    assert cold.maps["full"].shape == (6, 3, 3, 1280) and cold.maps["full"].dtype == np.float16
    assert cold.maps["stage4"].shape == (6, 4, 4, 40)
    assert len(_entries(cold)) == 6 and all(p.parent.name == p.stem[:2] for p in _entries(cold))
    assert len(_bundles(cold)) == 1  # all samples, in this order, as one file
    # the flipped copy is a different network input, hence a different feature
    assert not np.array_equal(cold.maps["full"][0], cold.maps["full"][4])

    warm = F.extract(P, None, prepared, samples, "efficientnet_lite0", batch_size=4)
    assert (warm.misses, warm.hits, warm.seconds) == (0, 6, 0.0)
    for lv in cold.maps:
        np.testing.assert_array_equal(warm.maps[lv], cold.maps[lv])

    # any subset of levels, in any batch size and sample order, is served by the same entries
    _drop_bundles(cold)
    sub = F.extract(P, None, prepared, samples.iloc[::-1].reset_index(drop=True), "efficientnet_lite0",
                    ["full"], batch_size=5)
    assert (sub.misses, list(sub.maps)) == (0, ["full"])
    np.testing.assert_array_equal(sub.maps["full"], cold.maps["full"][::-1])
    np.testing.assert_allclose(sub.vectors("full")[::-1], F.vectors(cold.maps["full"]))
    assert len(_bundles(cold)) == 1  # this sample order's bundle, written from the entries


def test_bundle_serves_warm_requests_and_damaged_bundle_is_rebuilt(P):
    from liverfuse.cache import load_npz, save_npz

    prepared, samples = _prepared(), _samples(SAMPLES)
    cold = F.extract(P, None, prepared, samples, "efficientnet_lite0")
    [bundle] = _bundles(cold)
    for p in _entries(cold):  # a warm request reads the bundle alone
        p.unlink()
    warm = F.extract(P, None, prepared, samples, "efficientnet_lite0", ["stage6"])
    assert (warm.misses, warm.hits, list(warm.maps)) == (0, 6, ["stage6"])
    np.testing.assert_array_equal(warm.maps["stage6"], cold.maps["stage6"])
    F.extract(P, None, prepared, samples.iloc[:4], "efficientnet_lite0")  # other samples: recompute these
    # a truncated bundle is deleted and rebuilt from the per-sample entries
    bundle.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    again = F.extract(P, None, prepared, samples, "efficientnet_lite0")
    assert (again.misses, again.hits) == (2, 4)  # 4 entries survived (rewritten above), 2 recomputed
    np.testing.assert_allclose(again.maps["full"].astype(np.float32), cold.maps["full"].astype(np.float32),
                               rtol=2e-3, atol=1e-3)
    assert load_npz(bundle) is not None
    # a readable bundle of the wrong shape is not trusted either
    entry = load_npz(bundle)
    save_npz(bundle, **{**entry, "full": entry["full"][:2]})
    third = F.extract(P, None, prepared, samples, "efficientnet_lite0")
    assert (third.misses, third.hits) == (0, 6)
    assert load_npz(bundle)["full"].shape == (6, 3, 3, 1280)


def test_damaged_entry_is_detected_and_recomputed(P):
    prepared, samples = _prepared(), _samples(SAMPLES)
    cold = F.extract(P, None, prepared, samples, "efficientnet_lite0")
    victim = _entries(cold)[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated write
    other = _entries(cold)[1]
    other.write_bytes(b"not a zip file at all")
    _drop_bundles(cold)  # this test is about the per-sample entries
    again = F.extract(P, None, prepared, samples, "efficientnet_lite0")
    assert (again.misses, again.hits) == (2, 4)
    for lv in cold.maps:  # recomputed in a smaller batch: equal up to float16 rounding
        np.testing.assert_allclose(again.maps[lv].astype(np.float32), cold.maps[lv].astype(np.float32),
                                   rtol=2e-3, atol=1e-3)
    _drop_bundles(cold)
    third = F.extract(P, None, prepared, samples, "efficientnet_lite0")
    assert (third.misses, third.hits) == (0, 6)  # the rewritten entries are valid
    # a readable entry of the wrong shape or dtype is not trusted either
    from liverfuse.cache import load_npz, save_npz

    path = _entries(cold)[2]
    entry = load_npz(path)
    save_npz(path, **{**entry, "full": entry["full"][:2]})
    _drop_bundles(cold)
    fourth = F.extract(P, None, prepared, samples, "efficientnet_lite0")
    assert (fourth.misses, fourth.hits) == (1, 5)
    np.testing.assert_allclose(fourth.maps["full"].astype(np.float32), cold.maps["full"].astype(np.float32),
                               rtol=2e-3, atol=1e-3)


def test_key_follows_image_content_and_configuration(P, params, tmp_path):
    prepared, samples = _prepared(), _samples(SAMPLES)
    F.extract(P, None, prepared, samples, "efficientnet_lite0")
    changed = prepared.copy()
    changed[0, 10, 10, 0] ^= 1  # one pixel of image 0, used by two samples
    fs = F.extract(P, None, changed, samples, "efficientnet_lite0")
    assert (fs.misses, fs.hits) == (2, 4)
    # other weights, preprocessing or backbone: another configuration folder, nothing shared
    Pr = params("04_feature_levels", weights="random", cache_dir=P.cache_dir)
    fr = F.extract(Pr, None, prepared, samples, "efficientnet_lite0")
    assert fr.misses == 6 and fr.weights_used == "random(seed=0)" and fr.folder != fs.folder
    Pn = params("04_feature_levels", preprocessing="none", cache_dir=P.cache_dir)
    assert F.extract(Pn, None, prepared, samples, "efficientnet_lite0").misses == 6


def test_random_weight_keras_backbone_and_empty_samples(params):
    P = params("04_feature_levels", weights="random")
    prepared = _prepared(2)
    fs = F.extract(P, None, prepared, _samples([(0, "original"), (1, "flip_h")]), "resnet50", ["conv3", "full"])
    assert fs.maps["conv3"].shape == (2, 4, 4, 512) and fs.maps["full"].shape == (2, 3, 3, 2048)
    assert fs.weights_used == "random(seed=0)"
    empty = F.extract(P, None, prepared, _samples([]), "resnet50", ["full"])
    assert empty.maps["full"].shape == (0, 3, 3, 2048)


def test_bad_inputs(P):
    with pytest.raises(ValueError, match="uint8 stack"):
        F.extract(P, None, _prepared().astype(np.float32), _samples(SAMPLES), "efficientnet_lite0")
    with pytest.raises(ValueError, match="missing columns"):
        F.extract(P, None, _prepared(), pd.DataFrame({"row": [0]}), "efficientnet_lite0")
    with pytest.raises(ValueError, match="Allowed levels"):
        F.extract(P, None, _prepared(), _samples(SAMPLES), "efficientnet_lite0", ["conv3"])
    with pytest.raises(ValueError, match="backbone, level"):
        F.normalise_parts(["resnet50"])


def test_features_for_assembles_parts_and_provenance(P, monkeypatch):
    prepared, samples = _prepared(), _samples(SAMPLES)
    monkeypatch.setattr(F, "prepared_samples", lambda P: (None, prepared, samples))
    out_samples, maps, prov = F.features_for(P, [("efficientnet_lite0", "full"), "efficientnet_lite0:stage4"])
    assert out_samples is samples
    assert list(maps) == [("efficientnet_lite0", "full"), ("efficientnet_lite0", "stage4")]
    assert maps[("efficientnet_lite0", "full")].shape == (6, 3, 3, 1280)
    assert prov[["backbone", "weights", "weights_requested"]].values.tolist() == [
        ["efficientnet_lite0", "imagenet", "auto"]]
    assert "efficientnet_lite0" in F.provenance_banner(prov) and "NOT ImageNet" not in F.provenance_banner(prov)
    banner = F.provenance_banner(pd.DataFrame([{"backbone": "resnet50", "weights": "random(seed=0)"}]))
    assert "NOT ImageNet" in banner


def test_level_table_pooled_sizes():
    table = B.level_table(96, backbones=["resnet50"])
    assert table["pooled"].tolist() == ["4 x 4 x 512", "4 x 4 x 1024", "3 x 3 x 2048"]
