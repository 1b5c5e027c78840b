"""One parameter contract for every notebook.

Every notebook has a papermill ``parameters`` cell of plain values and, right after
it, one call::

    P = liverfuse.setup("04_feature_levels", data_dir=data_dir, profile=profile, ...)

:func:`setup` validates every value *before any heavy work* and raises
:class:`ValueError` naming the parameter and its allowed values, so that
``papermill ... -p protocol bogus`` exits non-zero with a message a user can act on.
List-valued parameters accept a Python list or a comma-separated string, so
``-p backbones resnet50,vgg16`` works from the command line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

NOTEBOOKS = (
    "01_data",
    "02_preprocessing",
    "03_augmentation",
    "04_feature_levels",
    "05_fusion_strategies",
    "06_funet",
    "07_classifiers",
    "08_roc",
)
PROTOCOLS = ("patient", "paper")
PREPROCESSING = ("paper", "none")
WEIGHTS_KEYWORDS = ("auto", "imagenet", "random")
PAPER_BACKBONES = ("vgg16", "resnet50", "densenet201", "inception_resnet_v2")
LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2")
BACKBONES = PAPER_BACKBONES + LITE_BACKBONES
CLASSIFIERS = (
    "linear_svm",
    "rbf_svm",
    "poly_svm",
    "sigmoid_svm",
    "knn",
    "random_forest",
    "bagging",
    "adaboost",
    "gradient_boosting",
    "stacking",
)


@dataclass(frozen=True)
class Profile:
    """Sizes that trade fidelity for time.

    ``quick`` is sized so the whole book builds cold in 15 minutes or less on a 2-core
    machine, and warm in 3 or less (``benchmarks/bench_book.py`` measures both). It is a
    pipeline check: its validation trains on half the training patients per fold, and its
    96 px input is far below what ImageNet weights expect. ``paper`` uses the
    paper's sizes (1665 x 1393 images, 224 px network input, training set x10) and 5 folds.
    """

    name: str
    phantom_size: tuple[int, int]  # (width, height) of generated phantom images
    input_size: int  # square network input, pixels
    augment_factor: int  # training-set expansion (1 = no augmentation)
    cv_folds: int  # grouped cross-validation folds (patient protocol)
    n_bootstrap: int  # bootstrap resamples for test-accuracy intervals
    funet_epochs: int  # maximum FuNet head epochs (early stopping decides)
    pca_components: float | int  # PCA before every classifier (float = variance kept, int = at most that many)


PROFILES = {
    "quick": Profile(
        name="quick",
        phantom_size=(333, 278),
        input_size=96,
        augment_factor=10,
        cv_folds=2,  # 3 folds cost ~4 more minutes of a cold book build (one more FuNet, 40% more fit time)
        n_bootstrap=500,
        funet_epochs=40,
        pca_components=256,
    ),
    "paper": Profile(
        name="paper",
        phantom_size=(1665, 1393),
        input_size=224,
        augment_factor=10,
        cv_folds=5,
        n_bootstrap=2000,
        funet_epochs=100,
        pca_components=0.95,
    ),
}


@dataclass(frozen=True)
class Params:
    """Validated parameters of one notebook run."""

    notebook: str
    data_dir: Path | None  # None = the embedded synthetic phantom
    profile: Profile
    protocol: str
    seed: int
    cache_dir: Path
    output_dir: Path
    preprocessing: str = "paper"
    backbones: tuple[str, ...] = ()
    weights: str = "auto"
    classifier: str = "stacking"
    classifiers: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def data_label(self) -> str:
        """Short name of the data, for tables: ``phantom`` or the folder name."""
        return "phantom" if self.data_dir is None else self.data_dir.name

    def replace(self, **changes) -> "Params":
        return replace(self, **changes)


def _choice(name: str, value, allowed: Sequence[str]) -> str:
    value = str(value).strip()
    if value not in allowed:
        raise ValueError(
            f"Unknown {name}={value!r}. Allowed values: {', '.join(allowed)}."
        )
    return value


def parse_list(name: str, value, allowed: Sequence[str] | None = None) -> tuple[str, ...]:
    """Accept a list/tuple or a comma-separated string; validate each item."""
    if value is None:
        return ()
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, Iterable):
        items = [str(v).strip() for v in value]
    else:
        raise ValueError(f"{name} must be a list or a comma-separated string, got {value!r}.")
    items = [v for v in items if v]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise ValueError(
                f"Unknown {name} {', '.join(map(repr, bad))}. Allowed values: {', '.join(allowed)}."
            )
    return tuple(dict.fromkeys(items))  # de-duplicate, keep order


def _weights(value) -> str:
    value = str(value).strip() or "auto"
    if value in WEIGHTS_KEYWORDS:
        return value
    path = Path(value).expanduser()
    if path.is_file():
        return str(path.resolve())
    raise ValueError(
        f"weights={value!r} is neither one of {', '.join(WEIGHTS_KEYWORDS)} nor an existing "
        "weights file. Pass 'auto' (ImageNet where obtainable, otherwise seeded random), "
        "'imagenet', 'random', or the path to a saved weights file."
    )


def default_cache_dir() -> Path:
    """``$LIVERFUSE_CACHE`` or ``<repo or cwd>/.cache/liverfuse``."""
    env = os.environ.get("LIVERFUSE_CACHE")
    if env:
        return Path(env).expanduser()
    return _project_root() / ".cache" / "liverfuse"


def _project_root() -> Path:
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists() and (here / "notebooks").is_dir():
        return here
    return Path.cwd()


def setup(
    notebook: str,
    *,
    data_dir=None,
    profile="quick",
    protocol="patient",
    seed=0,
    cache_dir=None,
    output_dir=None,
    preprocessing="paper",
    backbones=None,
    weights="auto",
    classifier="stacking",
    classifiers=None,
    **extra,
) -> Params:
    """Validate a notebook's parameters and create its output folder.

    Raises
    ------
    ValueError
        Naming the offending parameter and the allowed values.
    """
    notebook = _choice("notebook", notebook, NOTEBOOKS)
    prof = PROFILES[_choice("profile", profile, tuple(PROFILES))]
    protocol = _choice("protocol", protocol, PROTOCOLS)
    preprocessing = _choice("preprocessing", preprocessing, PREPROCESSING)
    classifier = _choice("classifier", classifier, CLASSIFIERS)
    try:
        seed_f = float(seed)
        if not seed_f.is_integer():
            raise ValueError
        seed = int(seed_f)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"seed must be a whole number, got {seed!r}.") from None
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")

    if data_dir is None or str(data_dir).strip() in ("", "None", "phantom"):
        data_path = None
    else:
        data_path = Path(str(data_dir)).expanduser().resolve()
        if not data_path.is_dir():
            raise ValueError(
                f"data_dir={str(data_dir)!r} is not a folder. Pass a folder laid out as "
                "<class>/<patient>/<image> (or <class>/<image> with a manifest.csv), "
                "or leave data_dir empty for the embedded synthetic phantom."
            )

    cache = Path(str(cache_dir)).expanduser() if cache_dir not in (None, "") else default_cache_dir()
    out = (
        Path(str(output_dir)).expanduser()
        if output_dir not in (None, "")
        else _project_root() / "results" / notebook
    )
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    tune_allocator()  # before TensorFlow starts its threads (see there)

    return Params(
        notebook=notebook,
        data_dir=data_path,
        profile=prof,
        protocol=protocol,
        seed=seed,
        cache_dir=cache.resolve(),
        output_dir=out.resolve(),
        preprocessing=preprocessing,
        backbones=parse_list("backbones", backbones, BACKBONES),
        weights=_weights(weights),
        classifier=classifier,
        classifiers=parse_list("classifiers", classifiers, CLASSIFIERS),
        extra=dict(extra),
    )


#: glibc ``mallopt`` settings applied by :func:`tune_allocator` (parameter number, value).
_MALLOPT = {
    "M_ARENA_MAX": (-8, 1),  # one heap for every thread (TensorFlow's threads would each get their own)
    "M_MMAP_THRESHOLD": (-3, 1 << 30),  # tensors up to 1 GiB come from the heap, not from fresh mmaps
    "M_TRIM_THRESHOLD": (-1, 1 << 30),  # keep up to 1 GiB of freed heap instead of returning it at once
    "M_TOP_PAD": (-2, 256 << 20),  # grow the heap in 256 MiB steps
}
_tuned: dict[str, bool] = {}


def tune_allocator() -> dict[str, bool]:
    """Make glibc's ``malloc`` reuse memory instead of mapping fresh pages for every large tensor.

    FuNet's training step (:mod:`liverfuse.funet`) allocates and frees tens of megabytes of
    tensors per step on TensorFlow's threads. With glibc's defaults each of those becomes a fresh
    ``mmap``: the kernel zeroes the pages on first touch and takes them back on ``free``, and on a
    2-core machine that page-fault work took as much CPU time as the training itself (measured: 64 s
    wall, 51 s of it system time, for 4 epochs over the phantom's 12 maps; 40 s wall, 9 s system,
    with these settings; peak memory 3.5 vs 3.75 GB; feature extraction and the classifiers are
    unchanged within noise). The numbers computed are identical: only where memory comes from changes.

    Applied once per process by :func:`setup` (i.e. at the top of every notebook, before TensorFlow
    starts its threads) and by :meth:`liverfuse.funet.FuNet.fit`. A no-op off glibc, or when the
    environment variable ``LIVERFUSE_MALLOC=default`` is set.

    Returns
    -------
    dict setting -> whether glibc accepted it (empty when not applied).
    """
    if _tuned or os.environ.get("LIVERFUSE_MALLOC", "").strip().lower() == "default":
        return dict(_tuned)
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for name, (param, value) in _MALLOPT.items():
        _tuned[name] = bool(mallopt(param, value))
    return dict(_tuned)
