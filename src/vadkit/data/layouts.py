"""Dataset layouts: functions that turn a folder into a :class:`~vadkit.data.samples.Split`.

A layout knows where a dataset keeps its normal images, defective images and masks, and how to split them.
They sit in one registry, :data:`LAYOUTS`, so the CLI and the benchmark reach any of them by name::

    split = load_split("mvtec", "datasets/mvtec", category="bottle")
    split = load_split("folder", "line3/", test_ratio=0.2)

Layouts only list files; nothing is decoded here (:class:`~vadkit.data.dataset.ImageDataset` checks the
files). Train sets hold normal images only. Layouts never drop a test image without saying so: orphan masks
and anomalous images without a mask are reported with one warning each.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

from vadkit.data.elpv import elpv
from vadkit.data.io import IMAGE_EXTENSIONS, list_images
from vadkit.data.samples import ANOMALOUS, NORMAL, Sample, Split
from vadkit.data.splitting import (
    MaskIndex,
    check_fraction,
    split_normals,
    warn_missing_masks,
    warn_orphan_masks,
)
from vadkit.errors import DataError

# ---------------------------------------------------------------------------------------------------------
# MVTec AD layout
# ---------------------------------------------------------------------------------------------------------

MVTEC_HELP = (
    "expected <category>/train/good/, <category>/test/<type>/ and optionally <category>/ground_truth/<type>/"
)


#: folder names the ``folder`` layout recognises as the mask folder when ``mask_dir`` is not given (they are
#: never taken for a defect type)
MASK_DIR_NAMES = ("masks", "mask", "ground_truth", "gt")

def _is_mvtec_category(folder: Path) -> bool:
    return (folder / "test").is_dir() or (folder / "train").is_dir()


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def mvtec_categories(root: str | Path) -> list[str]:
    """Names of the MVTec-style category folders directly under ``root`` (``[]`` if root is one itself)."""
    root = _existing_dir(root, "mvtec")
    return [d.name for d in _visible_subdirs(root) if _is_mvtec_category(d)]


def _mvtec_category_dir(root: Path, category: str | None) -> Path:
    """The category folder: ``root`` itself, ``root/category``, or the only category under ``root``."""
    categories = [] if _is_mvtec_category(root) else mvtec_categories(root)
    if category is not None:
        if (root / category).is_dir() and _is_mvtec_category(root / category):
            return root / category
        if _is_mvtec_category(root) and root.name == category:
            return root
        found = ", ".join(categories) or "none"
        raise DataError(f"no MVTec category {category!r} under {root} (categories found: {found})")
    if _is_mvtec_category(root):
        return root
    if len(categories) == 1:
        return root / categories[0]
    if not categories:
        raise DataError(f"{root} is not an MVTec-style dataset: {MVTEC_HELP}")
    raise DataError(
        f"{root} holds {len(categories)} categories ({', '.join(categories)}); "
        "pick one with category=<name> (CLI: --option category=<name>)"
    )


def _mvtec_defect_samples(
    defect_type: str, images: list[Path], gt_dir: Path, missing: list[Path], orphans: list[Path]
) -> list[Sample]:
    """Anomalous samples of one defect type, paired with masks from ``gt_dir`` when it exists."""
    if not gt_dir.is_dir():
        return [Sample(p, ANOMALOUS, defect_type, None) for p in images]
    index = MaskIndex(list_images(gt_dir))
    samples = [Sample(p, ANOMALOUS, defect_type, index.find(p)) for p in images]
    missing.extend(s.image_path for s in samples if s.mask_path is None)
    orphans.extend(index.orphans())
    return samples


def mvtec(root: str | Path, category: str | None = None) -> Split:
    """MVTec AD layout: ``train/good`` (label 0), ``test/good`` (0), ``test/<type>`` (1), masks in
    ``ground_truth/<type>/`` named ``<stem>_mask.<ext>`` or ``<stem>.<ext>``.

    ``root`` is a category folder, or a folder of categories; then ``category`` picks one (it may be left out
    when there is exactly one). A missing ``ground_truth/`` gives masks of None (image-level metrics only).
    """
    folder = _mvtec_category_dir(_existing_dir(root, "mvtec"), category)
    train_dir, test_dir, gt_root = folder / "train" / "good", folder / "test", folder / "ground_truth"
    for needed in (test_dir, train_dir):
        if not needed.is_dir():
            raise DataError(f"{folder} has no {needed.relative_to(folder)}/ folder: {MVTEC_HELP}")

    train = [Sample(p, NORMAL, "good") for p in _nonempty_images(train_dir)]
    test: list[Sample] = []
    missing: list[Path] = []
    orphans: list[Path] = []
    for type_dir in _visible_subdirs(test_dir):
        images = list_images(type_dir)
        if type_dir.name == "good":
            test += [Sample(p, NORMAL, "good") for p in images]
        else:
            test += _mvtec_defect_samples(type_dir.name, images, gt_root / type_dir.name, missing, orphans)
    if gt_root.is_dir():  # masks of a defect type that has no test folder at all
        tested = {d.name for d in _visible_subdirs(test_dir)} | {"good"}
        for gt_dir in _visible_subdirs(gt_root):
            if gt_dir.name not in tested:
                orphans.extend(list_images(gt_dir))
    if not test:
        raise DataError(f"no images in {test_dir}: {MVTEC_HELP}")
    warn_orphan_masks(orphans, folder)
    warn_missing_masks(missing, folder)
    return Split(train=train, test=test)


# ---------------------------------------------------------------------------------------------------------
# Plain folders
# ---------------------------------------------------------------------------------------------------------


def _folder_dirs(
    base: Path | None, normal_dir: str | Path, defect_dirs, mask_dir
) -> tuple[Path, list[Path], Path | None]:
    """Resolve the folder layout's directories (relative to ``base`` when given)."""

    def resolve(p: str | Path) -> Path:
        return base / p if base is not None else Path(p)  # an absolute p stays absolute

    normal = resolve(normal_dir)
    if mask_dir is not None:
        masks: Path | None = resolve(mask_dir)
        if not masks.is_dir():
            raise DataError(f"mask folder {masks} does not exist; check mask_dir or leave it out")
    else:
        found = [base / name for name in MASK_DIR_NAMES if base is not None and (base / name).is_dir()]
        masks = found[0] if found else None
    if defect_dirs is None:
        others = _visible_subdirs(base) if base is not None else []
        not_defects = {normal.resolve()} | ({masks.resolve()} if masks is not None else set())
        defects = [d for d in others if d.resolve() not in not_defects]
    else:
        if isinstance(defect_dirs, (str, Path)):
            defect_dirs = [defect_dirs]
        defects = [resolve(d) for d in defect_dirs]
    return normal, defects, masks


def folder(
    root: str | Path | None = None,
    *,
    normal_dir: str | Path = "good",
    defect_dirs: Sequence[str | Path] | str | Path | None = None,
    mask_dir: str | Path | None = None,
    test_ratio: float = 0.2,
    seed: int = 0,
) -> Split:
    """A folder of good images and folders of defective ones, with an optional folder of masks.

    With ``root``: ``normal_dir`` (default ``good``), ``defect_dirs`` and ``mask_dir`` are relative to it;
    ``defect_dirs`` defaults to every other subfolder, ``mask_dir`` to the first of ``masks``, ``mask``, ``ground_truth``, ``gt`` that exists. Without
    ``root`` they are paths of their own (and there are no defect folders unless given). The defect type of
    an image is its folder's name. Masks are searched recursively under ``mask_dir`` and paired by stem
    (``x.png`` <- ``x_mask.png`` or ``x.png``); a mask inside ``mask_dir/<defect type>/`` only pairs with
    images of that type, so equal file names in different defect folders stay apart.

    Good images are split by the shared seeded rule (:mod:`vadkit.data.splitting`): ``test_ratio`` of them
    go to the test set. ``test_ratio=0`` puts every good image in training (the test set then holds the
    defective images only): the usual setting on a production line, where a model is trained on all good
    parts and calibrated elsewhere.
    """
    base = _existing_dir(root, "folder") if root is not None else None
    test_ratio = check_fraction(test_ratio, "test_ratio", allow_zero=True)
    normal, defects, masks = _folder_dirs(base, normal_dir, defect_dirs, mask_dir)
    goods = _nonempty_images(normal)
    train, test_good = split_normals(
        goods, 1.0 - test_ratio, seed, what=f"good images in {normal}", ratio_text=f"test_ratio={test_ratio}"
    )
    test = [Sample(p, NORMAL, "good") for p in test_good] + _folder_defects(defects, masks, base or normal.parent)
    return Split(train=[Sample(p, NORMAL, "good") for p in train], test=test)


def _folder_defects(defects: list[Path], masks: Path | None, where: Path) -> list[Sample]:
    """Anomalous samples of every defect folder, with masks paired from ``masks`` (warns on leftovers)."""
    if masks is None:
        return [Sample(image, ANOMALOUS, d.name, None) for d in defects for image in list_images(d)]
    index = MaskIndex(list_images(masks, recursive=True), masks, [d.name for d in defects])
    samples = [Sample(image, ANOMALOUS, d.name, index.find(image, d.name)) for d in defects for image in list_images(d)]
    warn_orphan_masks(index.orphans(), masks)
    warn_missing_masks([s.image_path for s in samples if s.mask_path is None], where)
    return samples


# ---------------------------------------------------------------------------------------------------------
# Magnetic Tile Defects (Huang et al. 2020), as published
# ---------------------------------------------------------------------------------------------------------

MTD_DEFECT_CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")


def _mtd_images(root: Path, name: str) -> Path:
    imgs = root / f"MT_{name}" / "Imgs"
    if not imgs.is_dir():
        raise DataError(
            f"{imgs} does not exist: the MTD layout is <root>/MT_<class>/Imgs/<name>.jpg with <name>.png masks, "
            f"classes Free, {', '.join(MTD_DEFECT_CLASSES)}"
        )
    return imgs


def _jpg_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg" and not p.name.startswith("."))


def mtd(root: str | Path, *, train_ratio: float = 0.8) -> Split:
    """Magnetic Tile Defects in its published layout: ``MT_<class>/Imgs/<name>.jpg`` + ``<name>.png`` mask.

    There is no official split; vadkit's rule: sort the ``MT_Free`` image names, shuffle them with
    ``random.Random(0).shuffle``, the first ``int(train_ratio * n)`` are training images, the rest normal
    test images (761 / 191 with the default 0.8). Every image of Blowhole, Break, Crack, Fray and Uneven is
    a test anomaly with its mask (soft edges, binarised at > 127 by :func:`~vadkit.data.io.load_mask`).
    The all-black ``MT_Free`` masks are ignored.
    """
    base = _existing_dir(root, "mtd")
    train_ratio = check_fraction(train_ratio, "train_ratio")
    free = _mtd_images(base, "Free")
    goods = _jpg_files(free)
    if not goods:
        raise DataError(f"no images in {free} (MTD images are .jpg files)")
    train, test_good = split_normals(
        goods, train_ratio, 0, what=f"images in {free}", ratio_text=f"train_ratio={train_ratio}"
    )
    if not test_good:
        raise DataError(f"train_ratio={train_ratio} leaves no normal test image out of {len(goods)} in {free}")
    test = [Sample(p, NORMAL, "good") for p in test_good]
    missing: list[Path] = []
    for name in MTD_DEFECT_CLASSES:
        for image in _jpg_files(_mtd_images(base, name)):
            mask = image.with_suffix(".png")
            if not mask.is_file():
                missing.append(image)
            test.append(Sample(image, ANOMALOUS, name, mask if mask.is_file() else None))
    warn_missing_masks(missing, base)
    return Split(train=[Sample(p, NORMAL, "good") for p in train], test=test)


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------

LAYOUTS: dict[str, Callable[..., Split]] = {"mvtec": mvtec, "folder": folder, "mtd": mtd, "elpv": elpv}
"""Layout name -> function ``(root, **options) -> Split``. Add one with :func:`register_layout`."""


def register_layout(name: str, function: Callable[..., Split]) -> Callable[..., Split]:
    """Add a layout under ``name``; its first parameter is ``root``, the others are its options."""
    if name in LAYOUTS:
        raise ValueError(f"layout {name!r} is already registered")
    LAYOUTS[name] = function
    return function


def layout_options(layout: str) -> list[str]:
    """The option names (keyword parameters besides ``root``) that ``layout`` accepts."""
    parameters = list(inspect.signature(_get_layout(layout)).parameters.values())[1:]
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _get_layout(layout: str) -> Callable[..., Split]:
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; known layouts: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[layout]


def load_split(layout: str, root: str | Path | None = None, **options) -> Split:
    """The train/test split of the dataset at ``root`` read with the named layout.

    Unknown layouts and options raise :class:`DataError` listing the valid ones.
    """
    function = _get_layout(layout)
    allowed = layout_options(layout)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(
            f"unknown option(s) {', '.join(unknown)} for layout {layout!r}; its options are: "
            f"{', '.join(allowed) or 'none'}"
        )
    return function(root, **options)


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def _existing_dir(root: str | Path | None, layout: str) -> Path:
    if root is None:
        raise DataError(f"layout {layout!r} needs a dataset folder (root); none was given")
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"dataset folder {root} {what}; check the path")
    return root


def _nonempty_images(folder: Path) -> list[Path]:
    images = list_images(folder)
    if not images:
        extensions = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise DataError(f"no images in {folder} (looked for {extensions} files)")
    return images
