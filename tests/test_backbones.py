"""Backbones: documented level shapes, weights provenance and loading paths, no network needed.

The ImageNet download path is exercised against a local ``http.server`` on 127.0.0.1 serving a
random-weights file in Keras' legacy ``*_notop.h5`` format under Keras' own file name.
"""
from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from liverfuse import backbones as B

#: the module docstring's table at a 224-pixel input: (h, C) per level
DOCUMENTED_224 = {
    "vgg16": {"block3": (28, 256), "block4": (14, 512), "full": (7, 512)},
    "resnet50": {"conv3": (28, 512), "conv4": (14, 1024), "full": (7, 2048)},
    "densenet201": {"conv3": (28, 512), "conv4": (14, 1792), "full": (7, 1920)},
    "inception_resnet_v2": {"block35": (25, 320), "block17": (12, 1088), "full": (5, 1536)},
    "efficientnet_lite0": {"stage4": (28, 40), "stage6": (14, 112), "full": (7, 1280)},
    "efficientnet_lite2": {"stage4": (28, 48), "stage6": (14, 120), "full": (7, 1280)},
}
SMALL = 83  # odd, small, >= 75 (InceptionResNetV2's minimum): exercises every floor/ceil


def _batch(n=2, size=SMALL, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Never touch the user's KERAS_HOME or the real origin; fresh memoisation per test."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("LIVERFUSE_KERAS_WEIGHTS_URL", f"http://127.0.0.1:{_closed_port()}/")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(B, "_AUTO_WARNED", set())
    B._resolve.cache_clear()
    B._build_cached.cache_clear()
    yield
    B._resolve.cache_clear()
    B._build_cached.cache_clear()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connections are refused


def test_documented_shapes_at_224():
    for bb, levels in DOCUMENTED_224.items():
        shapes = B.output_shapes(bb, 224)
        assert list(shapes) == list(B.LEVELS[bb]) and list(B.LEVELS[bb])[-1] == "full"
        assert {lv: (h, c) for lv, (h, w, c) in shapes.items()} == levels, bb


@pytest.mark.parametrize("backbone", B.BACKBONES)
def test_level_outputs_match_documented_shapes(backbone):
    ex = B.build(backbone, weights="random", input_size=SMALL)
    out = ex.predict(_batch())
    assert list(out) == list(B.LEVELS[backbone])
    expected = B.output_shapes(backbone, SMALL)
    for lv, arr in out.items():
        assert arr.shape == (2, *expected[lv]), (backbone, lv)
        assert arr.dtype == np.float32 and np.isfinite(arr).all()
    assert ex.weights_used == "random(seed=0)"
    # the in-graph pooling used by the feature cache = numpy adaptive max pooling of these maps
    from liverfuse.features import GRID, pool_grid

    pooled = ex.predict_pooled(_batch(), GRID)
    for lv, arr in out.items():
        assert pooled[lv].dtype == np.float16
        np.testing.assert_allclose(pooled[lv].astype(np.float32), pool_grid(arr).astype(np.float16),
                                   rtol=2e-3, atol=1e-3)
    if backbone in B.KERAS_BACKBONES:  # the documented Keras layer exists and is what we read
        assert {lv: ex.model.get_layer(name=B.LEVELS[backbone][lv]).name for lv in ex.levels} == ex.layers


def test_level_subset_and_table():
    ex = B.build("efficientnet_lite0", levels=["stage6"], weights="random", input_size=64)
    assert list(ex.predict(_batch(1, 64))) == ["stage6"]
    table = B.level_table(224)
    assert set(table["backbone"]) == set(B.BACKBONES)
    assert table.loc[(table.backbone == "resnet50") & (table.level == "conv4"), "layer"].item() == "conv4_block6_out"
    assert table.loc[(table.backbone == "resnet50") & (table.level == "full"), "feature_size"].item() == 2048


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="Allowed values"):
        B.build("alexnet")
    with pytest.raises(ValueError, match="Allowed levels"):
        B.build("resnet50", levels=["conv9"], weights="random")
    with pytest.raises(ValueError, match="at least 75"):
        B.build("inception_resnet_v2", weights="random", input_size=64)
    with pytest.raises(ValueError, match="not a file"):
        B.build("resnet50", weights="/no/such/file.weights.h5")
    ex = B.build("efficientnet_lite0", weights="random", input_size=64)
    with pytest.raises(ValueError, match=r"\(B, 64, 64, 3\)"):
        ex.predict(_batch(1, 65))


def test_random_weights_are_seeded():
    a = B.build("vgg16", weights="random", input_size=32, seed=3).predict(_batch(1, 32))["full"]
    B._build_cached.cache_clear()
    b = B.build("vgg16", weights="random", input_size=32, seed=3).predict(_batch(1, 32))["full"]
    c = B.build("vgg16", weights="random", input_size=32, seed=4).predict(_batch(1, 32))["full"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("backbone,suffix", [("vgg16", ".weights.h5"), ("efficientnet_lite0", ".pth")])
def test_weights_file_round_trip(tmp_path, backbone, suffix):
    src = B.build(backbone, weights="random", input_size=64, seed=7)
    path = src.save_weights(tmp_path / f"saved{suffix}")
    x = _batch(2, 64)
    expected = src.predict(x)
    loaded = B.build(backbone, weights=str(path), input_size=64)
    assert loaded.weights_used.startswith("file:") and loaded.weights_id == loaded.weights_used
    got = loaded.predict(x)
    for lv in expected:
        np.testing.assert_allclose(got[lv], expected[lv], rtol=1e-5, atol=1e-5)


def _serve(root: Path):
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args):  # keep pytest output clean; record what was fetched
        _QuietHandler.requests.append(self.path)


def test_imagenet_path_downloads_through_keras_get_file(tmp_path, monkeypatch):
    """weights='imagenet' fetches Keras' file name from the (overridden) origin into KERAS_HOME."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    src = B.build("vgg16", weights="random", input_size=64, seed=11)
    sub, _ = B.KERAS_WEIGHTS_FILES["vgg16"]
    served = tmp_path / "mirror" / sub
    served.parent.mkdir(parents=True)
    with h5py.File(served, "w") as f:  # Keras' published *_notop.h5 files use this legacy layout
        legacy_h5_format.save_weights_to_hdf5_group(f, src.model)
    x = _batch(2, 64)
    expected = src.predict(x)["full"]

    server = _serve(tmp_path / "mirror")
    _QuietHandler.requests.clear()
    try:
        monkeypatch.setenv("LIVERFUSE_KERAS_WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}/")
        B._resolve.cache_clear()
        ex = B.build("vgg16", weights="imagenet", input_size=64)
    finally:
        server.shutdown()
        server.server_close()
    assert _QuietHandler.requests == ["/" + sub]
    cached = list((tmp_path / "keras_home" / "models").rglob(served.name))
    assert len(cached) == 1 and ex.spec.path == cached[0]
    # a mirror file that is not Keras' published one must never pass for real ImageNet weights
    assert ex.weights_used.startswith("imagenet-mirror-unverified(md5:")
    np.testing.assert_allclose(ex.predict(x)["full"], expected, rtol=1e-5, atol=1e-5)
    # the server is gone: the KERAS_HOME copy is used without any network access
    B._resolve.cache_clear()
    B._build_cached.cache_clear()
    again = B.build("vgg16", weights="imagenet", input_size=64)
    assert again.weights_id == ex.weights_id


def test_imagenet_unobtainable_fails_fast_with_instructions():
    t0 = time.perf_counter()
    with pytest.raises(B.WeightsError) as err:
        B.resolve_weights("resnet50", "imagenet")
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    for needle in ("resnet50", "KERAS_HOME", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                   "weights=<path", "efficientnet_lite0"):
        assert needle in msg
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("url", ["refused", "http://192.0.2.1/"])  # TEST-NET-1: never answers
def test_auto_falls_back_to_random_quickly_offline(monkeypatch, url):
    if url == "refused":
        url = f"http://127.0.0.1:{_closed_port()}/"
    monkeypatch.setenv("LIVERFUSE_KERAS_WEIGHTS_URL", url)
    monkeypatch.setenv("LIVERFUSE_NET_TIMEOUT", "1")
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match="falling back to random"):
        spec = B.resolve_weights("densenet201", "auto", seed=5)
    assert time.perf_counter() - t0 < 3.5
    assert (spec.kind, spec.used) == ("random", "random(seed=5)")
    assert "RANDOM" in spec.note
    # same cache identity as an explicit 'random' request: features are shared, never mislabelled
    assert spec.id == B.resolve_weights("densenet201", "random", seed=5).id


def test_lite_weights_are_always_available():
    spec = B.resolve_weights("efficientnet_lite0", "auto")
    assert (spec.kind, spec.used) == ("imagenet", "imagenet")
    assert spec.id.startswith("imagenet:")


def test_efficientnet_lite0_imagenet_top5_on_chelsea_is_a_cat():
    """The installed EfficientNet-Lite0 weights are real ImageNet weights (classes 281-285 are cats)."""
    import torch
    from skimage import data, transform

    img = transform.resize(data.chelsea(), (224, 224), anti_aliasing=True, preserve_range=True)
    ex = B.build("efficientnet_lite0", levels=["full"], weights="imagenet", input_size=224)
    head = ex.predict(img.astype(np.uint8)[None])["full"]  # (1, 7, 7, 1280) through our level path
    with torch.no_grad():
        logits = ex.model._fc(torch.from_numpy(head.mean(axis=(1, 2))))
    top5 = torch.topk(logits[0], 5).indices.tolist()
    assert set(top5) & set(range(281, 286)), top5
    assert top5[0] in range(281, 286)
