"""Batched, cached feature extraction shared by notebooks 04-08.

Pooling (the paper: "we added a maximum pooling layer of different specifications to the feature output
layer for down-sampling"): every level's feature map is max-pooled to at most ``GRID x GRID`` cells
(adaptive max pooling: cell ``i`` covers rows ``floor(i*h/g)`` to ``ceil((i+1)*h/g)``) and cached as
float16. The level's *vector*, the feature the classifiers see, is the maximum over that grid, which
equals global max pooling of the full map (every map position lies in some cell); its length is the
level's channel count (Table 7). FuNet (:mod:`liverfuse.funet`) uses the grid itself, so its spatial
attention has a spatial map to work on.

Cache: ``<cache_dir>/features/<backbone>-<config key>/<k[:2]>/<k>.npz``, one small file per sample
holding every level of the backbone. The *config key* digests everything shared by a run: backbone,
all of its level and layer names, the weights identity (:attr:`WeightsSpec.id`), input size, GRID,
preprocessing method and a format version. The *sample key* ``k`` digests the network-ready image
itself (the prepared, augmented uint8 array, so any change to preprocessing or augmentation code
changes it) plus the augmentation operation's name. All levels are computed together (one forward
pass gives them all), so whichever notebook asks first computes each feature once per configuration
and every later request, for any subset of levels, is a cache hit. Files are written atomically
(:func:`liverfuse.cache.save_npz`) by a background writer thread; a damaged file is detected by
:func:`liverfuse.cache.load_npz`, deleted and recomputed. A two-character fan-out keeps folders
small with tens of thousands of entries.

Bundles: once every sample of a run is in the cache, all of them are also written as one file,
``<config folder>/bundles/<digest of the sample keys>.npz``. A later request for the same samples (the
next notebook, a rebuild) reads that one file instead of thousands of small ones (about 0.5 s instead
of 4-5 s per backbone for the phantom's 3,192 samples); it is checked like every entry and rebuilt from
the per-sample entries when damaged. This doubles the disk the feature cache takes.
"""
from __future__ import annotations

import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import backbones as bb_mod
from .cache import atomic_write, digest, load_npz, save_npz

GRID = 4
FORMAT_VERSION = 1


def pool_grid(maps: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Adaptive max pooling of (N, h, w, C) maps to (N, min(h, grid), min(w, grid), C).

    Cells may overlap by one row/column when ``h`` is not a multiple of ``grid`` (as in
    ``torch.nn.AdaptiveMaxPool2d``); the union of cells is the whole map.
    """
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"feature maps must be (N, h, w, C), got shape {maps.shape}.")
    n, h, w, c = maps.shape
    rows, cols = bb_mod.grid_cells(h, grid), bb_mod.grid_cells(w, grid)
    if (len(rows), len(cols)) == (h, w):
        return maps.copy()
    out = np.empty((n, len(rows), len(cols), c), maps.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            out[:, i, j] = maps[:, r0:r1, c0:c1].max(axis=(1, 2))
    return out


def vectors(maps: np.ndarray) -> np.ndarray:
    """Level vectors (N, C) float32: the global maximum over each (N, g, g, C) grid."""
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"pooled maps must be (N, g, g, C), got shape {maps.shape}.")
    return maps.max(axis=(1, 2)).astype(np.float32)


@dataclass
class FeatureSet:
    """Pooled feature maps of every sample for one backbone.

    Attributes
    ----------
    backbone : str
    maps : dict level -> float16 array (N, g, g, C), rows in ``samples`` order.
    samples : the samples table (see :func:`liverfuse.augmentation.expand`).
    weights_used : provenance ('imagenet', 'random(seed=0)', 'file:<sha256-16>', ...).
    weights_id : weights identity used in the cache key.
    seconds : time spent computing (model build + forward passes + pooling); 0 on a full cache hit.
    hits, misses : cache entries found / computed.
    folder : the cache folder of this configuration.
    note : why 'auto' fell back to random weights (empty otherwise).
    """

    backbone: str
    maps: dict[str, np.ndarray]
    samples: pd.DataFrame
    weights_used: str
    weights_id: str
    seconds: float
    hits: int = 0
    misses: int = 0
    folder: Path | None = None
    note: str = ""
    layers: dict[str, str] = field(default_factory=dict)

    def vectors(self, level: str) -> np.ndarray:
        """(N, C) float32 vector of ``level`` (global max pooling)."""
        return vectors(self.maps[level])


def config(backbone: str, weights_id: str, input_size: int, preprocessing: str) -> dict:
    """Everything shared by all samples of one extraction run (digested into the folder name)."""
    return {
        "format": FORMAT_VERSION,
        "backbone": backbone,
        "levels": dict(bb_mod.LEVELS[backbone]),  # the level set always computed and stored
        "weights_id": weights_id,
        "input_size": int(input_size),
        "grid": GRID,
        "preprocessing": preprocessing,
    }


def cache_folder(cache_dir: Path, cfg: dict) -> Path:
    """``<cache_dir>/features/<backbone>-<digest(cfg)>``."""
    return Path(cache_dir) / "features" / f"{cfg['backbone']}-{digest(cfg)}"


def sample_key(image: np.ndarray, op: str) -> str:
    """Digest of a network-ready uint8 image and the name of the operation that produced it."""
    return digest(np.ascontiguousarray(image), str(op), length=24)


def entry_path(folder: Path, key: str) -> Path:
    return folder / key[:2] / f"{key}.npz"


def bundle_path(folder: Path, keys) -> Path:
    """Where all samples with these sample keys (in this order) are cached as one file."""
    return folder / "bundles" / f"{digest(list(keys))}.npz"


def sample_keys(prepared: np.ndarray, samples: pd.DataFrame, chunk: int = 256) -> list[str]:
    """The :func:`sample_key` of every sample (each augmented image is made, digested and dropped)."""
    from . import augmentation

    ops = samples["op"].astype(str).to_numpy()
    keys: list[str] = []
    for start in range(0, len(samples), chunk):
        imgs = augmentation.images(prepared, samples, start, start + chunk)
        keys += [sample_key(img, ops[start + k]) for k, img in enumerate(imgs)]
    return keys


def _check_inputs(prepared: np.ndarray, samples: pd.DataFrame, input_size: int) -> None:
    if prepared.ndim != 4 or prepared.shape[1:] != (input_size, input_size, 3) or prepared.dtype != np.uint8:
        raise ValueError(
            f"prepared must be a uint8 stack of shape (N, {input_size}, {input_size}, 3) from "
            f"liverfuse.preprocessing.prepare(input_size={input_size}); got {prepared.dtype} {prepared.shape}."
        )
    missing = {"row", "op"} - set(samples.columns)
    if missing:
        raise ValueError(
            f"samples is missing columns {sorted(missing)}; pass the table from liverfuse.augmentation.expand."
        )


def extract(P, dataset, prepared: np.ndarray, samples: pd.DataFrame, backbone: str, levels=None, *,
            batch_size: int = 32, progress: bool | None = None, keys: list[str] | None = None) -> FeatureSet:
    """Pooled feature maps of every sample for ``backbone`` (computed once, then read from the cache).

    Parameters
    ----------
    P : :class:`liverfuse.params.Params` (uses weights, seed, cache_dir, preprocessing,
        profile.input_size).
    dataset : the :class:`liverfuse.data.Dataset` the ``prepared`` stack was made from (its name labels
        the progress bar; may be ``None``).
    prepared : uint8 (N_images, S, S, 3) from :func:`liverfuse.preprocessing.prepare`.
    samples : the samples table from :func:`liverfuse.augmentation.expand` (columns ``row``, ``op``).
    backbone : one of :data:`liverfuse.backbones.BACKBONES`.
    levels : levels to return (default all); all levels are computed and cached regardless.
    batch_size : images per forward pass.
    progress : show a tqdm bar on a terminal (default: when there are at least 20 samples).
    keys : :func:`sample_keys` of ``samples``, if already computed (:func:`features_for` shares them
        between backbones).

    Returns
    -------
    FeatureSet
    """
    from tqdm.auto import tqdm

    from . import augmentation

    levels = bb_mod.check_levels(backbone, levels)
    all_levels = tuple(bb_mod.LEVELS[backbone])
    input_size = int(P.profile.input_size)
    prepared = np.asarray(prepared)
    _check_inputs(prepared, samples, input_size)
    spec = bb_mod.resolve_weights(backbone, P.weights, P.seed)
    cfg = config(backbone, spec.id, input_size, P.preprocessing)
    folder = cache_folder(P.cache_dir, cfg)
    if not (folder / "config.json").exists():
        with atomic_write(folder / "config.json", "w") as f:
            json.dump({**cfg, "weights_used": spec.used}, f, indent=1)

    n = len(samples)
    expected = {lv: (min(h, GRID), min(w, GRID), c)
                for lv, (h, w, c) in bb_mod.output_shapes(backbone, input_size).items()}
    result = dict(backbone=backbone, samples=samples, weights_used=spec.used, weights_id=spec.id, folder=folder,
                  note=spec.note, layers={lv: bb_mod.LEVELS[backbone][lv] for lv in levels})
    if keys is None:
        keys = sample_keys(prepared, samples)
    if len(keys) != n:
        raise ValueError(f"keys has {len(keys)} items for {n} samples.")
    bundle = bundle_path(folder, keys)
    found = load_npz(bundle, keys=all_levels)
    if found is not None and all(found[lv].dtype == np.float16 and found[lv].shape == (n, *expected[lv])
                                 for lv in all_levels):
        return FeatureSet(maps={lv: found[lv] for lv in levels}, seconds=0.0, hits=n, misses=0, **result)

    # every level is kept (not only those asked for), to write the bundle at the end
    out: dict[str, np.ndarray] = {lv: np.empty((n, *expected[lv]), np.float16) for lv in all_levels}
    state = {"extractor": None, "seconds": 0.0, "hits": 0, "misses": 0}
    writes: deque[Future] = deque()

    def valid(entry) -> bool:
        return entry is not None and all(
            entry[lv].dtype == np.float16 and entry[lv].shape == expected[lv] for lv in all_levels)

    def drain(block: bool = False) -> None:
        """Collect finished writes (raising their errors) so their arrays can be freed."""
        while writes and (block or writes[0].done()):
            writes.popleft().result()

    def store(i: int, entry: dict[str, np.ndarray]) -> None:
        for lv in all_levels:
            out[lv][i] = entry[lv]

    def read_chunk(start: int, stop: int):
        """Look up samples start:stop, augmenting them (runs one chunk ahead in a thread)."""
        imgs = augmentation.images(prepared, samples, start, stop)
        found = [load_npz(entry_path(folder, key), keys=all_levels) for key in keys[start:stop]]
        return start, imgs, keys[start:stop], found

    def compute(idx: list[int], imgs: list[np.ndarray], keys: list[str], writer: ThreadPoolExecutor) -> None:
        t0 = time.perf_counter()
        if state["extractor"] is None:
            state["extractor"] = bb_mod.build(backbone, levels=all_levels, weights=P.weights,
                                              input_size=input_size, seed=P.seed)
        pooled = state["extractor"].predict_pooled(np.stack(imgs), GRID)  # pooled + float16 in-graph
        state["seconds"] += time.perf_counter() - t0
        for k, (i, key) in enumerate(zip(idx, keys)):
            entry = {lv: pooled[lv][k] for lv in all_levels}
            store(i, entry)
            own = {lv: a.copy() for lv, a in entry.items()}  # do not keep the whole batch alive
            writes.append(writer.submit(save_npz, entry_path(folder, key), **own))
        state["misses"] += len(idx)
        drain()

    show = (n >= 20) if progress is None else progress
    name = getattr(dataset, "name", "") if dataset is not None else ""
    # on terminals only (disable=None), as every bar of the package: notebook outputs must not depend
    # on the cache state
    bar = tqdm(total=n, desc=f"{backbone} features{' (' + name + ')' if name else ''}",
               disable=None if show else True, unit="img")
    chunks = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    pend_i: list[int] = []
    pend_img: list[np.ndarray] = []
    pend_key: list[str] = []
    with ThreadPoolExecutor(1, thread_name_prefix="features-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="features-write") as writer:
        ahead = reader.submit(read_chunk, *chunks[0]) if chunks else None
        for c in range(len(chunks)):
            start, imgs, chunk_keys, found = ahead.result()
            ahead = reader.submit(read_chunk, *chunks[c + 1]) if c + 1 < len(chunks) else None
            for k, entry in enumerate(found):
                if valid(entry):  # else missing, damaged (load_npz) or of another shape: recompute
                    store(start + k, entry)
                    state["hits"] += 1
                else:
                    pend_i.append(start + k)
                    pend_img.append(imgs[k])
                    pend_key.append(chunk_keys[k])
            while len(pend_i) >= batch_size or (ahead is None and pend_i):
                compute(pend_i[:batch_size], pend_img[:batch_size], pend_key[:batch_size], writer)
                del pend_i[:batch_size], pend_img[:batch_size], pend_key[:batch_size]
            bar.update(len(chunk_keys))
        drain(block=True)  # surface write errors (disk full, permissions)
    bar.close()
    save_npz(bundle, **out)  # every sample is now cached: the next request reads one file
    return FeatureSet(maps={lv: out[lv] for lv in levels}, seconds=state["seconds"], hits=state["hits"],
                      misses=state["misses"], **result)


def normalise_parts(parts) -> list[tuple[str, str]]:
    """Validate ``[(backbone, level), ...]`` (also accepts ``"backbone:level"`` strings)."""
    out = []
    for part in parts:
        if isinstance(part, str):
            if ":" not in part:
                raise ValueError(f"part {part!r} must be (backbone, level) or 'backbone:level'.")
            part = tuple(part.split(":", 1))
        backbone, level = part
        bb_mod.check_levels(backbone, [level])
        out.append((backbone, level))
    if not out:
        raise ValueError("parts is empty: pass at least one (backbone, level) pair.")
    return list(dict.fromkeys(out))


def prepared_samples(P):
    """Load, split, prepare and augment the data of ``P``: ``(dataset, prepared, samples)``."""
    from . import augmentation, data, preprocessing, splits

    dataset = data.load(P)
    table = splits.split(dataset.table, P.protocol, P.seed)
    prepared = preprocessing.prepare(dataset, method=P.preprocessing, input_size=P.profile.input_size,
                                     cache_dir=P.cache_dir)
    samples = augmentation.expand(table, P.profile.augment_factor, P.seed)
    return dataset, prepared, samples


def features_for(P, parts, *, batch_size: int = 32, data=None):
    """Everything notebooks 04-08 need to get features, in one call.

    Loads the data of ``P``, splits it by ``P.protocol``, prepares it at ``P.profile.input_size``,
    augments the training set ``P.profile.augment_factor`` times and extracts (or reads from the cache)
    each backbone's levels.

    Parameters
    ----------
    P : :class:`liverfuse.params.Params`.
    parts : ``[(backbone, level), ...]``.
    data : ``(dataset, prepared, samples)`` from :func:`prepared_samples`, if already loaded.

    Returns
    -------
    samples : DataFrame, one row per sample (see :func:`liverfuse.augmentation.expand`).
    maps : dict ``(backbone, level)`` -> float16 (N, g, g, C) pooled maps in ``samples`` order.
    provenance : DataFrame, one row per backbone: backbone, weights (what was used), weights_requested,
        weights_id, seconds, cache_hits, computed, note.
    """
    parts = normalise_parts(parts)
    dataset, prepared, samples = data if data is not None else prepared_samples(P)
    wanted: dict[str, list[str]] = {}
    for backbone, level in parts:
        wanted.setdefault(backbone, []).append(level)
    maps: dict[tuple[str, str], np.ndarray] = {}
    rows = []
    keys = sample_keys(prepared, samples)  # the same for every backbone
    for backbone, levels in wanted.items():
        fs = extract(P, dataset, prepared, samples, backbone, levels, batch_size=batch_size, keys=keys)
        for lv in levels:
            maps[(backbone, lv)] = fs.maps[lv]
        rows.append({
            "backbone": backbone,
            "weights": fs.weights_used,
            "weights_requested": P.weights if P.weights in ("auto", "imagenet", "random") else "file",
            "weights_id": fs.weights_id,
            "seconds": round(fs.seconds, 1),
            "cache_hits": fs.hits,
            "computed": fs.misses,
            "note": fs.note.split(". ")[0] if fs.note else "",
        })
    return samples, {p: maps[p] for p in parts}, pd.DataFrame(rows)


def weights_provenance(P, backbones=None) -> pd.DataFrame:
    """Which weights each backbone of ``P`` will use, resolved before any extraction.

    Columns: backbone, weights (provenance string), requested, source, note. 'auto' falls back to
    random weights silently here: the table and :func:`weights_markdown` report it instead of a
    warning on stderr.
    """
    import warnings

    rows = []
    for b in (backbones or P.backbones):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = bb_mod.resolve_weights(b, P.weights, P.seed)
        rows.append({
            "backbone": b,
            "weights": spec.used,
            "requested": spec.requested if spec.kind != "file" else "file",
            "source": {"imagenet": "ImageNet", "random": "seeded random init", "file": "weights file"}[spec.kind],
        })
    return pd.DataFrame(rows)


def weights_markdown(provenance: pd.DataFrame, P) -> str:
    """A prominent Markdown statement of the weights in ``provenance`` (for the top of a notebook)."""
    rnd = provenance.loc[provenance["source"] == "seeded random init", "backbone"].tolist()
    unverified = provenance.loc[provenance["weights"].str.contains("unverified"), "backbone"].tolist()
    text = []
    if rnd:
        text.append(
            f"**⚠ RANDOM WEIGHTS for {', '.join(rnd)}.** ImageNet weights were not obtainable here "
            f"(weights=`{P.weights}`), so these backbones are randomly initialised (seed {P.seed}). Their "
            "numbers check the pipeline only and are **not comparable to the paper's**. For real ImageNet "
            "features run once on a machine with internet access (Keras caches the weights under "
            "`$KERAS_HOME/models`), pass `-p weights <file>`, or use `-p backbones efficientnet_lite0`."
        )
    if unverified:
        text.append(f"**⚠ {', '.join(unverified)}: weights from a mirror whose file does not match Keras' "
                    "published hash.**")
    others = [b for b in provenance["backbone"] if b not in rnd + unverified]
    if others:
        kinds = dict(zip(provenance["backbone"], provenance["weights"]))
        text.append("Weights: " + ", ".join(f"**{b}** = `{kinds[b]}`" for b in others) + ".")
    return "\n\n".join(text)


def provenance_banner(provenance: pd.DataFrame) -> str:
    """A short, prominent statement of which weights each backbone used (for notebook output)."""
    lines = []
    for row in provenance.itertuples():
        w = row.weights
        flag = "" if w.startswith("imagenet") and "unverified" not in w else "  <-- NOT ImageNet: not comparable to the paper"
        if w.startswith("imagenet") and "unverified" in w:
            flag = "  <-- mirror file not matching Keras' published hash"
        lines.append(f"  {row.backbone:<20} weights = {w}{flag}")
    return "Weights used by each backbone:\n" + "\n".join(lines)
