"""Serial feature fusion and the paper's fusion strategies 1-4 (Figs. 6-7, Table 8).

*Serial fusion* concatenates level vectors (each the global max pooling of one level's map, see
:mod:`liverfuse.features`), so a fused vector's length is the sum of its parts' lengths.

The strategies, as the paper describes them and generalised to any list of backbones:

1. **All full bases**: the full convolutional base (level ``full``) of every backbone
   (paper: VGG16 + ResNet50 + DenseNet201 + InceptionResNetV2).
2. **Partial bases of three networks**: InceptionResNetV2 is dropped; the remaining backbones
   contribute their *partial* base, i.e. the level below ``full`` (stride 16: ``block4``, ``conv4``,
   ``conv4``, ``stage6``).
3. **Lower layers**: the same backbones as strategy 2, at their lowest level (stride 8:
   ``block3``, ``conv3``, ``conv3``, ``stage4``).
4. **ResNet50 conv3 + conv4 + conv5**: the last residual unit of ResNet50's 3rd, 4th and 5th blocks,
   max-pooled and fused (Fig. 7). For a backbone list without ResNet50, the same multi-level fusion
   of the first backbone listed.

If dropping InceptionResNetV2 would leave nothing (``backbones=inception_resnet_v2``), strategies 2-3
keep it. ``A1``, ``A2``, ``A3`` (Table 10) are the full bases of ResNet50, DenseNet201 and VGG16.
"""
from __future__ import annotations

from itertools import combinations
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import backbones as bb_mod
from .features import vectors

PAPER_BACKBONES = ("vgg16", "resnet50", "densenet201", "inception_resnet_v2")

#: strategy number -> short description
STRATEGIES: dict[int, str] = {
    1: "full convolutional base of every backbone",
    2: "partial bases (level below full), without InceptionResNetV2",
    3: "lower layers (lowest level), without InceptionResNetV2",
    4: "ResNet50 conv3 + conv4 + conv5 block outputs (multi-level)",
}

Part = tuple[str, str]


def _backbones(backbones: Sequence[str] | str | None) -> tuple[str, ...]:
    if backbones is None:
        return PAPER_BACKBONES
    if isinstance(backbones, str):
        backbones = [b.strip() for b in backbones.split(",") if b.strip()]
    backbones = tuple(dict.fromkeys(backbones))
    for b in backbones:
        bb_mod.check_backbone(b)
    if not backbones:
        raise ValueError("backbones is empty: pass at least one of " + ", ".join(bb_mod.BACKBONES) + ".")
    return backbones


def _without_irv2(backbones: tuple[str, ...]) -> tuple[str, ...]:
    kept = tuple(b for b in backbones if b != "inception_resnet_v2")
    return kept or backbones


def strategy_parts(n: int, backbones: Sequence[str] | str | None = None) -> list[Part]:
    """The ``(backbone, level)`` parts of fusion strategy ``n`` (1-4) over ``backbones``.

    Parameters
    ----------
    n : strategy number, 1-4.
    backbones : backbone names (default the paper's four); a comma-separated string works too.

    Examples
    --------
    >>> strategy_parts(4)
    [('resnet50', 'conv3'), ('resnet50', 'conv4'), ('resnet50', 'full')]
    >>> strategy_parts(2, ["efficientnet_lite0"])
    [('efficientnet_lite0', 'stage6')]
    """
    bbs = _backbones(backbones)
    levels = {b: list(bb_mod.LEVELS[b]) for b in bbs}
    if n == 1:
        return [(b, "full") for b in bbs]
    if n == 2:
        return [(b, levels[b][-2]) for b in _without_irv2(bbs)]
    if n == 3:
        return [(b, levels[b][0]) for b in _without_irv2(bbs)]
    if n == 4:
        b = "resnet50" if "resnet50" in bbs else bbs[0]
        return [(b, lv) for lv in levels[b]]
    raise ValueError(f"Unknown fusion strategy {n!r}. Allowed values: {', '.join(map(str, STRATEGIES))}.")


def label(parts: Iterable[Part]) -> str:
    """Human-readable name of a fusion, e.g. ``resnet50:conv3 ∪ resnet50:conv4``."""
    return " ∪ ".join(f"{b}:{lv}" for b, lv in parts)


def fuse(maps_by_part: Mapping[Part, np.ndarray], parts: Sequence[Part]) -> np.ndarray:
    """Serial fusion: concatenate the parts' level vectors (global max pooling of each pooled map).

    Parameters
    ----------
    maps_by_part : ``{(backbone, level): (N, g, g, C) maps}`` as returned by
        :func:`liverfuse.features.features_for`.
    parts : which parts, in order.

    Returns
    -------
    float32 array (N, sum of C).
    """
    parts = [tuple(p) for p in parts]
    if not parts:
        raise ValueError("parts is empty: pass at least one (backbone, level) pair to fuse.")
    missing = [p for p in parts if p not in maps_by_part]
    if missing:
        raise ValueError(
            f"No feature maps for {missing}; extract them first, e.g. "
            f"liverfuse.features.features_for(P, {missing!r})."
        )
    vecs = [vectors(maps_by_part[p]) for p in parts]
    if len({len(v) for v in vecs}) != 1:
        raise ValueError(f"parts have different numbers of samples: {[len(v) for v in vecs]}.")
    return np.concatenate(vecs, axis=1)


def sizes(parts: Sequence[Part], input_size: int = 224) -> dict[Part, int]:
    """``{part: vector length}`` (the level's channel count), in ``parts`` order."""
    out = {}
    for b, lv in parts:
        bb_mod.check_levels(b, [lv])
        out[(b, lv)] = int(bb_mod.output_shapes(b, input_size)[lv][2])
    return out


def fused_size(parts: Sequence[Part], input_size: int = 224) -> int:
    """Length of the serially fused vector = the sum of the parts' lengths."""
    return sum(sizes(parts, input_size).values())


def strategy_table(backbones: Sequence[str] | str | None = None, input_size: int = 224) -> pd.DataFrame:
    """The Table 8 analogue: strategy, description, parts, part sizes and fused vector size."""
    rows = []
    for n, desc in STRATEGIES.items():
        parts = strategy_parts(n, backbones)
        sz = sizes(parts, input_size)
        rows.append({
            "strategy": n,
            "description": desc,
            "parts": label(parts),
            "part_sizes": " + ".join(str(s) for s in sz.values()),
            "fused_size": sum(sz.values()),
        })
    return pd.DataFrame(rows)


def full_base_sets(backbones: Sequence[str] | str | None = None, max_sets: int = 3) -> dict[str, list[Part]]:
    """Table 10's single and fused full-base features: ``A1``, ``A2``, ``A3``, ``A1 ∪ A2``, ... .

    ``A1, A2, A3`` are the full bases of ResNet50, DenseNet201 and VGG16 as in the paper; other
    backbones in ``backbones`` follow in the order given (InceptionResNetV2 last, as the paper left it
    out of Table 10), up to ``max_sets`` of them. Returns every non-empty combination, singles first.
    """
    bbs = _backbones(backbones)
    order = [b for b in ("resnet50", "densenet201", "vgg16") if b in bbs]
    order += [b for b in bbs if b not in order and b != "inception_resnet_v2"]
    order += [b for b in bbs if b not in order]
    order = order[:max_sets]
    names = {f"A{i + 1}": b for i, b in enumerate(order)}
    out: dict[str, list[Part]] = {}
    for k in range(1, len(order) + 1):
        for combo in combinations(names, k):
            out[" ∪ ".join(combo)] = [(names[a], "full") for a in combo]
    return out


def full_base_legend(backbones: Sequence[str] | str | None = None, max_sets: int = 3) -> pd.DataFrame:
    """Which backbone each ``A<i>`` of :func:`full_base_sets` stands for."""
    singles = {k: v for k, v in full_base_sets(backbones, max_sets).items() if "∪" not in k}
    return pd.DataFrame([{"set": k, "backbone": v[0][0], "level": "full"} for k, v in singles.items()])


# --------------------------------------------------------------------------------------------
# evaluating many feature sets with the same classifiers
# --------------------------------------------------------------------------------------------
def weights_label(parts: Sequence[Part], weights_of: Mapping[str, str]) -> str:
    """The ``weights`` column of a fused feature: one value if all parts agree, else per backbone."""
    bbs = list(dict.fromkeys(b for b, _ in parts))
    used = {b: weights_of.get(b, "?") for b in bbs}
    if len(set(used.values())) == 1:
        return next(iter(used.values()))
    return ", ".join(f"{b}={w}" for b, w in used.items())


def evaluate_sets(P, samples: pd.DataFrame, maps_by_part: Mapping[Part, np.ndarray],
                  sets: Mapping[str, Sequence[Part]], weights_of: Mapping[str, str],
                  classifier_names: Sequence[str] | None = None, *, progress: bool = True) -> list:
    """Serially fuse each named set of parts and evaluate it with every classifier.

    Parameters
    ----------
    P : :class:`liverfuse.params.Params` (protocol, seed, profile; ``P.classifiers`` by default).
    samples, maps_by_part : from :func:`liverfuse.features.features_for`.
    sets : ``{name: [(backbone, level), ...]}``, e.g. :func:`full_base_sets` or strategies.
    weights_of : ``{backbone: weights used}`` for the ``weights`` column.
    classifier_names : names from :data:`liverfuse.classifiers.CLASSIFIERS` (default ``P.classifiers``).

    Returns
    -------
    list of :class:`liverfuse.evaluation.Result`, set by set, classifiers in the given order. Each
    row carries ``strategy`` (the set's name), ``parts``, ``backbones`` and ``weights``.

    Notes
    -----
    Calls :func:`liverfuse.evaluation.evaluate_detailed` once per set (which shares each fold's
    fitted scaler and PCA between the classifiers and caches results under ``P.cache_dir``); a set
    whose parts equal an earlier set's (e.g. strategy 1 and A1 for a single backbone) is evaluated
    once and reported under both names.
    """
    import copy

    from tqdm.auto import tqdm

    from . import evaluation

    names = list(classifier_names or P.classifiers)
    if not names:
        raise ValueError("no classifiers given: pass classifier_names or set P.classifiers.")
    results = []
    done: dict[tuple, list] = {}
    for name, parts in tqdm(list(sets.items()), desc="feature sets", disable=None if progress and len(sets) >= 2 else True):
        key = tuple(tuple(p) for p in parts)
        if key not in done:
            row = {"strategy": name, "backbones": "+".join(dict.fromkeys(b for b, _ in parts)),
                   "weights": weights_label(parts, weights_of), "parts": label(parts)}
            done[key] = evaluation.evaluate_detailed(fuse(maps_by_part, parts), samples, names, P, label=row)
            results += done[key]
            continue
        for r in done[key]:
            twin = copy.copy(r)
            twin.row = {**r.row, "strategy": name}
            results.append(twin)
    return results

