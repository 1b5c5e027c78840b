"""FuNet: CBAM attention blocks, training on a tiny synthetic set, transform, persistence and caching."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("keras")

from liverfuse import funet as F  # noqa: E402

TINY = dict(epochs=40, batch_size=16, learning_rate=3e-3)


def synth_maps(n, seed, bright=1.5):
    """Two levels; class k has channel k of level 'a' brighter (at one position for class 0)."""
    rs = np.random.default_rng(seed)
    y = np.arange(n) % 3
    a = rs.random((n, 4, 4, 16)).astype(np.float32)
    b = rs.random((n, 2, 2, 8)).astype(np.float32)
    for k in range(3):
        a[y == k, :, :, k] += bright
    return {"a": a.astype(np.float16), "b": b.astype(np.float16)}, y


@pytest.fixture(scope="module")
def fitted():
    maps, y = synth_maps(60, 0)
    groups = np.repeat(np.arange(20), 3)  # 20 "patients"
    return F.FuNet(["a", "b"], reduction=4, seed=0, **TINY).fit(maps, y, groups)


def test_attention_layers_keep_shape_and_weights_in_unit_interval():
    import keras

    x = np.random.default_rng(0).normal(size=(5, 4, 3, 16)).astype("float32")
    out, w = F.channel_attention_layer(reduction=4)(keras.ops.convert_to_tensor(x))
    assert tuple(out.shape) == x.shape and tuple(w.shape) == (5, 16)
    w = np.asarray(w)
    assert (w >= 0).all() and (w <= 1).all()
    out, w = F.spatial_attention_layer(kernel_size=3)(keras.ops.convert_to_tensor(x))
    assert tuple(out.shape) == x.shape and tuple(w.shape) == (5, 4, 3)
    w = np.asarray(w)
    assert (w >= 0).all() and (w <= 1).all()
    # the attended map is the input scaled by weights in [0, 1]
    assert np.all(np.abs(np.asarray(out)) <= np.abs(x) + 1e-6)


def test_funet_beats_chance_on_held_out_maps(fitted):
    maps, y = synth_maps(60, 1)
    acc = (fitted.predict_proba(maps).argmax(axis=1) == y).mean()
    assert acc > 0.6  # chance is 1/3
    assert fitted.n_val_ > 0 and 1 <= fitted.best_epoch_ <= len(fitted.history_["loss"])
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(fitted.history_)


def test_transform_and_attention_shapes(fitted):
    maps, _ = synth_maps(10, 2)
    X = fitted.transform(maps)
    assert X.shape == (10, 16 + 8) and X.dtype == np.float32
    sa = fitted.spatial_attention(maps)
    ca = fitted.channel_attention(maps)
    assert sa["a"].shape == (10, 4, 4) and sa["b"].shape == (10, 2, 2)
    assert ca["a"].shape == (10, 16) and ca["b"].shape == (10, 8)
    for w in list(sa.values()) + list(ca.values()):
        assert w.min() >= 0 and w.max() <= 1


def test_same_seed_same_features_and_save_load(fitted, tmp_path):
    maps, y = synth_maps(60, 0)
    groups = np.repeat(np.arange(20), 3)
    again = F.FuNet(["a", "b"], reduction=4, seed=0, **TINY).fit(maps, y, groups)
    test_maps, _ = synth_maps(8, 3)
    assert np.allclose(again.transform(test_maps), fitted.transform(test_maps), atol=1e-5)
    fitted.save(tmp_path / "net")
    loaded = F.FuNet.load(tmp_path / "net")
    assert loaded.levels == ["a", "b"]
    assert np.array_equal(loaded.transform(test_maps), fitted.transform(test_maps))
    with pytest.raises(ValueError, match="not a saved FuNet"):
        F.FuNet.load(tmp_path / "missing")


def test_bad_input_messages(fitted):
    maps, _ = synth_maps(4, 0)
    with pytest.raises(ValueError, match="missing"):
        fitted.transform({"a": maps["a"]})
    with pytest.raises(ValueError, match="fitted on"):
        fitted.transform({"a": maps["a"][:, :2], "b": maps["b"]})
    with pytest.raises(ValueError, match="not fitted"):
        F.FuNet(["a"]).transform(maps)


def _samples(y, n_test):
    n = len(y)
    split = np.where(np.arange(n) < n - n_test, "train", "test")
    return pd.DataFrame(
        {
            "sample_id": [f"s{i}::original" for i in range(n)],
            "image_id": [f"s{i}" for i in range(n)],
            "op": "original",
            "split": split,
            "label": np.array(["a", "b", "c"])[y],
            "y": y,
            "group": [f"p{i // 3}" for i in range(n)],
        }
    )


def test_funet_features_cached_and_train_only(params):
    P = params("06_funet")
    P = P.replace(profile=P.profile.__class__(**{**P.profile.__dict__, "funet_epochs": 5}))
    maps, y = synth_maps(45, 4)
    samples = _samples(y, n_test=15)
    X, info = F.funet_features(P, maps, samples, {"data": "synthetic"})
    assert X.shape == (45, 24) and not info["cached"]
    assert (info["dir"] / "funet.weights.h5").exists() and info["epochs_run"] <= 5
    X2, info2 = F.funet_features(P, maps, samples, {"data": "synthetic"})
    assert info2["cached"] and info2["key"] == info["key"] and np.array_equal(X, X2)
    assert F.load(info["dir"]).spatial_attention(maps)["a"].shape == (45, 4, 4)
    # a different feature configuration is a different FuNet
    _, info3 = F.funet_features(P, maps, samples, {"data": "other"})
    assert info3["key"] != info["key"]
    # test rows are refused
    with pytest.raises(ValueError, match="test rows"):
        F.funet_features(P, maps, samples, {"data": "synthetic"}, fit_mask=np.ones(45, bool))
    # the provider (for evaluation) trains on the rows it is given
    provider = F.funet_provider(P, maps, samples, {"data": "synthetic"})
    mask = (samples["split"] == "train").to_numpy()
    assert np.array_equal(provider(mask), X) and provider.infos[-1]["cached"]
    # one changed sample (e.g. an image re-exported under the same name) is a different FuNet
    changed = {k: v.copy() for k, v in maps.items()}
    changed["a"][7] += 1.0
    assert F.maps_digest(changed) != F.maps_digest(maps)
    assert F.funet_features(P, changed, samples, {"data": "synthetic"})[1]["key"] != info["key"]


@pytest.mark.parametrize("damage", ["config.json", "meta.json", "funet.weights.h5", "scales.npz"])
def test_damaged_funet_entry_is_retrained(params, damage):
    P = params("06_funet")
    P = P.replace(profile=P.profile.__class__(**{**P.profile.__dict__, "funet_epochs": 2}))
    maps, y = synth_maps(45, 4)
    samples = _samples(y, n_test=15)
    X, info = F.funet_features(P, maps, samples, {"data": "synthetic"})
    f = info["dir"] / damage
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # truncated, as by a crash or a full disk
    X2, info2 = F.funet_features(P, maps, samples, {"data": "synthetic"})
    assert not info2["cached"] and np.allclose(X2, X)
    assert F.funet_features(P, maps, samples, {"data": "synthetic"})[1]["cached"]
    F.load(info2["dir"])  # the rewritten entry is complete


def test_funet_parts_and_key_parts(params):
    parts = F.funet_parts(["efficientnet_lite0", "vgg16"])
    assert parts[:3] == [("efficientnet_lite0", "stage4"), ("efficientnet_lite0", "stage6"), ("efficientnet_lite0", "full")]
    assert parts[-1] == ("vgg16", "full") and len(parts) == 6
    assert F.funet_parts(["vgg16", "resnet50"], "full") == [("vgg16", "full"), ("resnet50", "full")]
    with pytest.raises(ValueError, match="Allowed values: all, full"):
        F.funet_parts(["vgg16"], "bogus")
    P = params("06_funet")
    k = F.key_parts(P, parts, {"efficientnet_lite0": "imagenet", "vgg16": "random(seed=0)"})
    assert k["weights"] == {"efficientnet_lite0": "imagenet", "vgg16": "random(seed=0)"}
    assert k["data"] == "phantom" and k["protocol"] == "patient" and len(k["parts"]) == 6
