"""Loading and validating image folders: the phantom, or your own H&E images.

Two layouts are accepted (PNG, JPEG or TIFF images):

``<class>/<patient>/<image>``
    One folder per class (grade), one sub-folder per patient. The patient folder
    name is the patient id (prefixed with the class if the same name occurs in two
    classes).
``<class>/<image>`` (or anything else) ``+ manifest.csv``
    A ``manifest.csv`` at the root with columns ``path,label,group`` (path relative
    to the root, class label, patient id). **If a manifest exists it is
    authoritative**, whatever the folder structure.

Everything is checked before any heavy work, and every problem raises
:class:`DataError` (a :class:`ValueError`) naming the file or folder and the fix:
unreadable, corrupt or truncated images (each file is decoded *fully*, so a JPEG
cut short fails here rather than halfway through feature extraction), non-image
files inside class folders, a class or patient folder without images, a single
class, and layouts that are neither of the above. Greyscale, palette, 16-bit and
RGBA images are converted to 8-bit RGB, and :attr:`Dataset.notes` says so.
Validation results are cached per file (keyed by path, size and modification
time), so re-loading a large folder is quick.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError

from . import phantom
from .cache import atomic_write, digest

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("path", "label", "group")
#: Operating-system clutter that is silently skipped wherever it appears.
JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini",  # files and folders that operating
                        "__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information"})  # systems add
_LAYOUT_HELP = (
    "Expected <class>/<patient>/<image> folders, or class folders of images plus a "
    f"{MANIFEST} (columns {','.join(MANIFEST_COLUMNS)}) at the root."
)
_CONVERSIONS = {  # kind -> how the note describes it
    "grey": "greyscale images to RGB",
    "alpha": "images with transparency to RGB (composited on white)",
    "palette": "palette (indexed-colour) images to RGB",
    "16bit": "16-bit or floating-point images to 8-bit RGB",
    "other": "images in other colour modes (e.g. CMYK) to RGB",
}


class DataError(ValueError):
    """Invalid input data; the message names the file or folder and the fix."""


# --------------------------------------------------------------------------- reading one image


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _skipped(path: Path) -> bool:
    return path.name.startswith(".") or path.name in JUNK_NAMES


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    a = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        top = 1.0 if np.nanmax(a) <= 1.0 else 255.0 if np.nanmax(a) <= 255.0 else float(np.nanmax(a))
    elif arr.dtype.itemsize >= 2:
        top = 255.0 if a.max() <= 255 else 65535.0 if a.max() <= 65535 else float(a.max())
    else:
        top = 255.0
    return np.clip(np.nan_to_num(a) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _pil_rgb(im: Image.Image) -> tuple[np.ndarray, str | None]:
    """Convert a loaded PIL image to uint8 RGB; also say what kind of conversion it was."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im), None
    if mode == "P":
        kind = "palette"
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        if im.mode == "RGB":
            return np.asarray(im), kind
        mode = "RGBA"
    else:
        kind = None
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")), kind or "alpha"
    if mode in ("1", "L"):
        return np.asarray(im.convert("RGB")), "grey"
    if mode.startswith("I") or mode == "F":
        grey = _to_uint8(np.asarray(im))
        return np.repeat(grey[..., None], 3, axis=-1), "16bit"
    return np.asarray(im.convert("RGB")), "other"


def _array_rgb(arr: np.ndarray) -> tuple[np.ndarray, str | None]:
    """uint8 RGB from an array read by tifffile (H, W[, C])."""
    kind = None if arr.dtype == np.uint8 else "16bit"
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=-1), kind or "grey"
    if arr.ndim == 3 and arr.shape[-1] in (1, 2):
        return np.repeat(arr[..., :1], 3, axis=-1), kind or "grey"
    if arr.ndim == 3 and arr.shape[-1] == 4:
        a = arr[..., 3:4].astype(np.float32) / 255.0
        rgb = arr[..., :3].astype(np.float32) * a + 255.0 * (1 - a)
        return (rgb + 0.5).astype(np.uint8), kind or "alpha"
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return np.ascontiguousarray(arr), kind
    raise ValueError(f"unsupported array shape {arr.shape}")


def _decode(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """Decode the whole file (truncation is an error) into uint8 RGB and the conversion kind."""
    path = Path(path)
    fix = "Re-export or re-copy the file, or remove it from the data folder."
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG must fail, not be padded grey
    try:
        with Image.open(path) as im:
            im.load()
            if im.width < 1 or im.height < 1:
                raise DataError(f"{path}: the image is empty ({im.width} x {im.height} pixels). {fix}")
            return _pil_rgb(im)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found. Check the path (in {MANIFEST}, paths are relative to the data folder).") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        pil_error = err
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    if path.suffix.lower() in (".tif", ".tiff"):  # scientific TIFFs PIL cannot read
        try:
            import tifffile

            return _array_rgb(tifffile.imread(path))
        except Exception:
            pass
    reason = str(pil_error) or type(pil_error).__name__
    raise DataError(f"{path}: cannot be read as an image (corrupt, truncated or not really an image: {reason}). {fix}")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``uint8`` RGB of shape ``(H, W, 3)``.

    Greyscale, palette, 16-bit and RGBA images are converted (transparency is
    composited on white). The file is decoded fully: a corrupt or truncated
    image raises :class:`DataError` naming it.
    """
    return _decode(path)[0]


# --------------------------------------------------------------------------- the dataset


@dataclass
class Dataset:
    """A validated image collection.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per image, ordered by class, patient and image: ``image_id`` (path
        relative to ``root``, '/'-separated, unique and stable), ``path`` (absolute),
        ``label`` (class name), ``y`` (index into ``classes``) and ``group`` (patient
        id, unique across classes).
    classes : tuple of str
        Class names; ``y`` indexes this.
    root : Path
        The data folder.
    name : str
        ``'phantom'`` or the folder name.
    synthetic : bool
        True for the embedded phantom.
    notes : list of str
        What was converted or ignored while loading.
    """

    table: pd.DataFrame
    classes: tuple[str, ...]
    root: Path
    name: str
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    def image(self, i_or_image_id: int | str) -> np.ndarray:
        """The ``uint8`` RGB image for a row number or an ``image_id``."""
        if isinstance(i_or_image_id, (int, np.integer)):
            path = self.table["path"].iloc[int(i_or_image_id)]
        else:
            hit = self.table.loc[self.table["image_id"] == str(i_or_image_id), "path"]
            if hit.empty:
                raise KeyError(f"no image with image_id {i_or_image_id!r} in {self.name}")
            path = hit.iloc[0]
        return read_rgb(path)

    def summary(self) -> str:
        """One line: images, patients (groups) and classes."""
        return (
            f"{self.name}: {len(self.table)} images from {self.table['group'].nunique()} patients (groups) "
            f"in {len(self.classes)} classes ({', '.join(self.classes)})"
        )


def class_order(labels: Iterable[str]) -> tuple[str, ...]:
    """Paper order (poorly, moderately, well) when the labels are the paper's grades, else sorted."""
    labels = set(labels)
    if labels == set(phantom.CLASSES):
        return phantom.CLASSES
    return tuple(sorted(labels))


def _problems(kind: str, items: list[str], fix: str, limit: int = 10) -> DataError:
    shown = "\n  ".join(items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return DataError(f"{kind}:\n  {shown}{more}\n{fix}")


def _scan_folders(root: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Records ``(relative path, label, patient folder)`` of a ``<class>/<patient>/<image>`` tree."""
    entries = [e for e in sorted(root.iterdir()) if not _skipped(e)]
    class_dirs = [e for e in entries if e.is_dir()]
    top_images = [e.name for e in entries if e.is_file() and _is_image(e)]
    if not class_dirs:
        what = f"images directly in it ({', '.join(top_images[:3])}...)" if top_images else "no class folders"
        raise DataError(f"{root}: unknown layout, the data folder has {what}. {_LAYOUT_HELP}")
    if top_images:
        raise DataError(
            f"{root}: unknown layout, images lie beside the class folders ({', '.join(top_images[:3])}). "
            f"Move them into their class folder. {_LAYOUT_HELP}"
        )
    if len(class_dirs) < 2:
        raise DataError(
            f"{root}: found a single class folder ({class_dirs[0].name!r}); grading needs at least two "
            f"classes. Add one folder per class (e.g. poorly/, moderately/, well/). {_LAYOUT_HELP}"
        )
    records: list[tuple[str, str, str]] = []
    not_images: list[str] = []
    for cdir in class_dirs:
        children = [c for c in sorted(cdir.iterdir()) if not _skipped(c)]
        not_images += [str(c) for c in children if c.is_file() and not _is_image(c)]
        patients = [c for c in children if c.is_dir()]
        loose = [c for c in children if c.is_file() and _is_image(c)]
        if loose:
            raise DataError(
                f"{cdir}: images lie directly in the class folder (e.g. {loose[0].name}), so their patients are "
                f"unknown. Either add {root / MANIFEST} with columns {','.join(MANIFEST_COLUMNS)} "
                "(group = patient id), or move the images into <class>/<patient>/ folders."
            )
        if not patients:
            if not any(c.is_file() and not _is_image(c) for c in children):
                raise DataError(f"class folder {cdir} contains no images. Add its images or remove the folder.")
            continue
        for pdir in patients:
            items = [c for c in sorted(pdir.iterdir()) if not _skipped(c)]
            nested = [c for c in items if c.is_dir()]
            if nested:
                raise DataError(
                    f"{nested[0]}: unknown layout, folders nested below the patient folder. {_LAYOUT_HELP}"
                )
            not_images += [str(c) for c in items if not _is_image(c)]
            images = [c for c in items if _is_image(c)]
            if not images:
                if not any(not _is_image(c) for c in items):
                    raise DataError(f"patient folder {pdir} contains no images. Add its images or remove the folder.")
                continue
            records += [(c.relative_to(root).as_posix(), cdir.name, pdir.name) for c in images]
    if not_images:
        raise _problems(
            "Files that are not images (supported: " + ", ".join(IMAGE_EXTENSIONS) + ") inside class folders",
            not_images,
            "Remove them or move them out of the data folder.",
        )
    labels = {r[1] for r in records}
    empty = [str(root / c.name) for c in class_dirs if c.name not in labels]
    if empty:
        raise DataError(f"class folder {empty[0]} contains no images. Add its images or remove the folder.")
    notes = []
    owner: dict[str, set[str]] = {}
    for _, label, group in records:
        owner.setdefault(group, set()).add(label)
    if any(len(v) > 1 for v in owner.values()):
        records = [(p, label, f"{label}/{group}") for p, label, group in records]
        notes.append("patient folder names repeat across classes, so patient ids are '<class>/<patient>'")
    return records, notes


def _scan_manifest(root: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Records from ``root/manifest.csv`` (authoritative)."""
    mpath = root / MANIFEST
    try:
        df = pd.read_csv(mpath, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as err:
        raise DataError(f"{mpath}: cannot be parsed as CSV ({err}). It needs columns {','.join(MANIFEST_COLUMNS)}.") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{mpath}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns) or 'none'}. "
            f"A manifest needs columns {','.join(MANIFEST_COLUMNS)} (image path relative to the data folder, "
            "class label, patient id)."
        )
    if df.empty:
        raise DataError(f"{mpath}: lists no images. Add one row per image: {','.join(MANIFEST_COLUMNS)}.")
    df = df[list(MANIFEST_COLUMNS)].apply(lambda s: s.str.strip())
    blank = [f"line {i + 2}" for i, row in enumerate(df.itertuples(index=False)) if not all(row)]
    if blank:
        raise _problems(f"{mpath}: rows with an empty path, label or group", blank, "Fill in every field.")
    rel: list[str] = []
    outside: list[str] = []
    root_resolved = root.resolve()
    for i, p in enumerate(df["path"]):
        q = Path(p.replace("\\", "/"))
        try:  # absolute paths, and relative ones with '..', must still lie inside the data folder
            q = (q if q.is_absolute() else root_resolved / q).resolve().relative_to(root_resolved)
        except ValueError:
            outside.append(f"line {i + 2}: {p}")
            continue
        rel.append(q.as_posix())
    if outside:
        raise _problems(f"{mpath}: paths outside the data folder", outside,
                        "List paths relative to the data folder (the manifest's folder).")
    df["path"] = rel
    dup = df["path"][df["path"].duplicated()].tolist()
    if dup:
        raise _problems(f"{mpath}: images listed more than once", dup, "List each image once.")
    bad_ext = [f"line {i + 2}: {p}" for i, p in enumerate(df["path"]) if not _is_image(Path(p))]
    if bad_ext:
        raise _problems(f"{mpath}: entries that are not images (supported: {', '.join(IMAGE_EXTENSIONS)})",
                        bad_ext, "Remove them from the manifest.")
    absent = [f"line {i + 2}: {root / p}" for i, p in enumerate(df["path"]) if not (root / p).is_file()]
    if absent:
        raise _problems(f"{mpath}: listed images that do not exist", absent,
                        "Fix the paths (relative to the data folder) or remove the rows.")
    per_group = df.groupby("group")["label"].nunique()
    mixed = per_group[per_group > 1].index.tolist()
    if mixed:
        raise _problems(f"{mpath}: patients (groups) listed under more than one class", mixed,
                        "Each patient has one grade: fix the label or the group of those rows.")
    labels = sorted(df["label"].unique())
    if len(labels) < 2:
        raise DataError(
            f"{mpath}: lists a single class ({labels[0]!r}); grading needs at least two classes."
        )
    notes = []
    listed = set(df["path"])
    unlisted = sum(
        1 for f in root.rglob("*") if f.is_file() and _is_image(f) and f.relative_to(root).as_posix() not in listed
    )
    if unlisted:
        notes.append(f"{unlisted} image file(s) under {root.name}/ are not listed in {MANIFEST} and were ignored")
    return list(df.itertuples(index=False, name=None)), notes


def _validate(root: Path, rel_paths: list[str], cache_dir: Path | None, progress: bool | None) -> dict[str, str | None]:
    """Decode every file once (cached by path, size and mtime); return the conversion kind per file."""
    tqdm = phantom._tqdm()
    cache_file = None
    known: dict[str, list] = {}
    if cache_dir is not None:
        cache_file = Path(cache_dir) / "validated" / f"{digest(str(root.resolve()))}.json"
        try:
            known = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            known = {}
    kinds: dict[str, str | None] = {}
    fresh: dict[str, list] = {}
    todo = []
    for rel in rel_paths:
        st = (root / rel).stat()
        stamp = [st.st_size, st.st_mtime_ns]
        hit = known.get(rel)
        if isinstance(hit, list) and len(hit) == 3 and hit[:2] == stamp:
            kinds[rel] = hit[2]
            fresh[rel] = hit
        else:
            todo.append((rel, stamp))
    errors: list[str] = []
    show = (len(todo) >= 200) if progress is None else progress
    # disable=None: a bar on terminals only, so notebook outputs do not depend on cache state
    for rel, stamp in tqdm(todo, desc="checking images", disable=None if show else True, leave=False):
        try:
            _, kind = _decode(root / rel)
        except DataError as err:
            errors.append(str(err))
            continue
        kinds[rel] = kind
        fresh[rel] = [*stamp, kind]
    if cache_file is not None and todo:
        keep = {k: v for k, v in known.items() if k not in fresh} if len(known) < 100_000 else {}
        try:
            with atomic_write(cache_file, "w") as f:
                json.dump({**keep, **fresh}, f)
        except OSError:
            pass  # a read-only cache only costs time
    if errors:
        if len(errors) == 1:
            raise DataError(errors[0])
        raise _problems(f"{len(errors)} images cannot be read", errors,
                        "Re-export or re-copy those files, or remove them from the data folder.")
    return kinds


def _conversion_notes(kinds: dict[str, str | None]) -> list[str]:
    notes = []
    for kind, what in _CONVERSIONS.items():
        files = sorted(Path(p).name for p, k in kinds.items() if k == kind)
        if files:
            listed = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
            notes.append(f"converted {len(files)} {what}: {listed}")
    return notes


def scan(root: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """Find the images and their labels and patients without decoding anything.

    Returns the records (columns ``image_id, label, group``) and notes. Raises
    :class:`DataError` for layout problems.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder. {_LAYOUT_HELP}")
    if (root / MANIFEST).is_file():
        records, notes = _scan_manifest(root)
    else:
        records, notes = _scan_folders(root)
    return pd.DataFrame(records, columns=["image_id", "label", "group"]), notes


def load_dataset(
    data_dir: str | os.PathLike | None,
    *,
    cache_dir: str | os.PathLike,
    seed: int = 0,
    phantom_size: tuple[int, int] = phantom.DEFAULT_SIZE,
    progress: bool | None = None,
) -> Dataset:
    """Load and validate a data folder, or the embedded phantom.

    Parameters
    ----------
    data_dir : path or None
        ``None`` (or empty) for the synthetic phantom, generated into
        ``cache_dir/phantom/`` on first use; otherwise a folder in one of the two
        layouts described in the module docstring.
    cache_dir : path
        Cache root (phantom images, per-file validation results).
    seed : int
        Phantom seed (ignored for real data).
    phantom_size : (width, height)
        Phantom image size (ignored for real data).
    progress : bool or None
        Progress bar while decoding (terminals only); ``None`` = only for 200 or more
        unchecked files.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        For any problem with the data, naming the file or folder and the fix.
    """
    cache_dir = Path(cache_dir)
    synthetic = data_dir is None or str(data_dir).strip() in ("", "None", "phantom")
    if synthetic:
        root = phantom.ensure(cache_dir, seed=seed, size=phantom_size)
        name = "phantom"
    else:
        root = Path(data_dir).expanduser().resolve()
        name = root.name
    records, notes = scan(root)
    kinds = _validate(root, records["image_id"].tolist(), cache_dir, progress)
    notes = notes + _conversion_notes(kinds)

    classes = class_order(records["label"])
    table = records.assign(
        path=[str(root / p) for p in records["image_id"]],
        y=records["label"].map({c: i for i, c in enumerate(classes)}).astype(int),
    )
    table = table.sort_values(["y", "group", "image_id"], kind="stable").reset_index(drop=True)
    table = table[["image_id", "path", "label", "y", "group"]]
    return Dataset(table=table, classes=classes, root=root, name=name, synthetic=synthetic, notes=notes)


def load(P) -> Dataset:
    """:func:`load_dataset` with a notebook's validated parameters ``P``."""
    return load_dataset(P.data_dir, cache_dir=P.cache_dir, seed=P.seed, phantom_size=P.profile.phantom_size)
