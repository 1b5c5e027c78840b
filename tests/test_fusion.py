"""Fusion strategies 1-4 and serial fusion sizes."""
from __future__ import annotations

import numpy as np
import pytest

from liverfuse import backbones as B
from liverfuse import fusion as F


def test_paper_strategies():
    assert F.strategy_parts(1) == [("vgg16", "full"), ("resnet50", "full"), ("densenet201", "full"),
                                   ("inception_resnet_v2", "full")]
    assert F.strategy_parts(2) == [("vgg16", "block4"), ("resnet50", "conv4"), ("densenet201", "conv4")]
    assert F.strategy_parts(3) == [("vgg16", "block3"), ("resnet50", "conv3"), ("densenet201", "conv3")]
    assert F.strategy_parts(4) == [("resnet50", "conv3"), ("resnet50", "conv4"), ("resnet50", "full")]
    assert B.LEVELS["resnet50"] == {"conv3": "conv3_block4_out", "conv4": "conv4_block6_out",
                                    "full": "conv5_block3_out"}


def test_strategies_generalise_to_any_backbone_list():
    lite = "efficientnet_lite0"
    assert F.strategy_parts(1, lite) == [(lite, "full")]
    assert F.strategy_parts(2, [lite]) == [(lite, "stage6")]
    assert F.strategy_parts(3, [lite]) == [(lite, "stage4")]
    assert F.strategy_parts(4, [lite]) == [(lite, "stage4"), (lite, "stage6"), (lite, "full")]
    assert F.strategy_parts(2, "inception_resnet_v2") == [("inception_resnet_v2", "block17")]
    assert F.strategy_parts(4, ["vgg16", "resnet50"])[0] == ("resnet50", "conv3")
    with pytest.raises(ValueError, match="Allowed values: 1, 2, 3, 4"):
        F.strategy_parts(5)
    with pytest.raises(ValueError, match="Allowed values"):
        F.strategy_parts(1, ["alexnet"])


def test_table8_sizes_are_sums_of_parts():
    table = F.strategy_table(input_size=224)
    assert table["fused_size"].tolist() == [512 + 2048 + 1920 + 1536, 512 + 1024 + 1792,
                                            256 + 512 + 512, 512 + 1024 + 2048]
    for n in F.STRATEGIES:
        parts = F.strategy_parts(n)
        assert F.fused_size(parts, 96) == sum(B.output_shapes(b, 96)[lv][2] for b, lv in parts)


def test_fuse_concatenates_level_vectors():
    rng = np.random.default_rng(0)
    parts = F.strategy_parts(4, ["efficientnet_lite0"])
    maps = {p: rng.normal(size=(5, 3, 3, B.CHANNELS[p[0]][p[1]])).astype(np.float16) for p in parts}
    X = F.fuse(maps, parts)
    assert X.shape == (5, F.fused_size(parts)) and X.dtype == np.float32
    np.testing.assert_array_equal(X[:, :40], maps[parts[0]].max(axis=(1, 2)).astype(np.float32))
    np.testing.assert_array_equal(X[:, -1280:], maps[parts[2]].max(axis=(1, 2)).astype(np.float32))
    with pytest.raises(ValueError, match="No feature maps"):
        F.fuse(maps, [("resnet50", "full")])
    with pytest.raises(ValueError, match="different numbers of samples"):
        F.fuse({**maps, parts[0]: maps[parts[0]][:2]}, parts)


def test_full_base_sets_follow_the_papers_a1_a2_a3():
    sets = F.full_base_sets()
    assert list(sets)[:3] == ["A1", "A2", "A3"] and list(sets)[-1] == "A1 ∪ A2 ∪ A3"
    assert sets["A1"] == [("resnet50", "full")] and sets["A2"] == [("densenet201", "full")]
    assert sets["A3"] == [("vgg16", "full")] and len(sets) == 7
    assert list(F.full_base_sets("efficientnet_lite0")) == ["A1"]
    assert F.full_base_legend()["backbone"].tolist() == ["resnet50", "densenet201", "vgg16"]


def _toy(n_patients=12, per=4, seed=0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows, maps = [], {("efficientnet_lite0", "full"): [], ("efficientnet_lite0", "stage6"): []}
    for p in range(n_patients):
        y = p % 3
        split = "test" if p % 4 == 3 else "train"
        for i in range(per if split == "test" else 2 * per):
            op = "original" if split == "test" or i % 2 == 0 else "flip_h"
            rows.append({"sample_id": f"p{p}/i{i}::{op}", "image_id": f"p{p}/i{i}", "op": op, "split": split,
                         "label": "abc"[y], "y": y, "group": f"p{p}"})
            for key, c in (("full", 12), ("stage6", 6)):
                m = rng.normal(size=(2, 2, c)) + y * 0.8
                maps[("efficientnet_lite0", key)].append(m.astype(np.float16))
    return pd.DataFrame(rows), {k: np.stack(v) for k, v in maps.items()}


def test_evaluate_sets_shares_pca_and_matches_plain_evaluation(params):
    from liverfuse import evaluation

    P = params("05_fusion_strategies", classifiers="rbf_svm,poly_svm,random_forest")
    samples, maps = _toy()
    sets = {"S2": [("efficientnet_lite0", "stage6")], "S1+S2": [("efficientnet_lite0", "full"),
                                                                ("efficientnet_lite0", "stage6")]}
    weights = {"efficientnet_lite0": "imagenet"}
    sets["same parts again"] = sets["S2"]
    results = F.evaluate_sets(P, samples, maps, sets, weights, progress=False)
    table = evaluation.metrics_table(results)
    assert table["strategy"].tolist() == ["S2"] * 3 + ["S1+S2"] * 3 + ["same parts again"] * 3
    assert set(table["weights"]) == {"imagenet"} and table["n_features"].tolist() == [6] * 3 + [18] * 3 + [6] * 3
    plain = evaluation.evaluate(F.fuse(maps, sets["S1+S2"]), samples, list(P.classifiers), P, cache=False)
    cols = ["val_accuracy", "test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high"]
    np.testing.assert_allclose(table[cols].to_numpy()[3:6], plain[cols].to_numpy())
    np.testing.assert_allclose(table[cols].to_numpy()[6:], table[cols].to_numpy()[:3])


def test_weights_label():
    assert F.weights_label([("resnet50", "full"), ("vgg16", "full")],
                           {"resnet50": "imagenet", "vgg16": "random(seed=0)"}) == \
        "resnet50=imagenet, vgg16=random(seed=0)"
    assert F.weights_label([("resnet50", "conv3"), ("resnet50", "full")], {"resnet50": "imagenet"}) == "imagenet"
