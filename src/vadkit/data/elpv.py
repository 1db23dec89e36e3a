"""ELPV: electroluminescence images of solar cells (Deitsch et al. 2019), from the ``elpv-dataset`` package.

The package (``pip install elpv-dataset``, version 1.0.0.post1) ships its 2,624 images as 300x300 8-bit
grayscale PNG files inside the package (``elpv_dataset/data/images/cellNNNN.png``) with
``elpv_dataset/data/labels.csv`` (path, defect probability, mono/poly). So samples point straight at those
files: nothing is copied. Only if a package version ships arrays without files are the images written once
as PNG under ``cache_dir`` (default ``$VADKIT_HOME/elpv``, else ``~/.cache/vadkit/elpv``) and reused after.
A clone of the GitHub repository (``labels.csv`` + ``images/``) can be passed as ``root`` instead.

Labels: each cell carries a defect probability in {0, 1/3, 2/3, 1}. 0 is normal, 1 is anomalous (defect
type ``defective``); the uncertain 1/3 and 2/3 cells are left out by default because they would be label
noise in either class. With ``include_uncertain=True`` they are test anomalies (any probability > 0 counts;
defect types ``uncertain_p0.33`` / ``uncertain_p0.67``, so metrics can be broken down). There are no masks.

Split: a quarter of the normal cells (``test_ratio=0.25``) are test normals, by the shared seeded rule of
:mod:`vadkit.data.splitting`. A quarter keeps 1,131 cells for training, many more than memory-bank methods
need, while giving 377 normal test cells against 715 defective ones, enough for a stable AUROC.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from vadkit.data.samples import ANOMALOUS, NORMAL, Sample, Split
from vadkit.data.splitting import check_fraction, split_normals
from vadkit.errors import DataError

CELL_TYPES = ("mono", "poly")
LABELS_FILE = "labels.csv"
INSTALL_HINT = "pip install elpv-dataset"


def default_cache_dir() -> Path:
    """Where ELPV images are written if the package has no image files: ``$VADKIT_HOME/elpv`` or
    ``~/.cache/vadkit/elpv``."""
    home = os.environ.get("VADKIT_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "vadkit") / "elpv"


def read_labels(data_dir: Path) -> list[tuple[Path, float, str]]:
    """``(image path, defect probability, cell type)`` rows of ``data_dir/labels.csv``."""
    labels = data_dir / LABELS_FILE
    if not labels.is_file():
        raise DataError(f"{labels} does not exist: an ELPV folder holds labels.csv and images/")
    rows = []
    for number, line in enumerate(labels.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            rows.append((data_dir / fields[0], float(fields[1]), fields[2]))
        except (IndexError, ValueError) as exc:
            raise DataError(f"{labels} line {number} is not '<image> <probability> <type>': {line!r}") from exc
    return rows


def _complete(data_dir: Path) -> bool:
    """True when ``data_dir`` has labels.csv and every image it lists."""
    if not (data_dir / LABELS_FILE).is_file():
        return False
    return all(path.is_file() for path, _, _ in read_labels(data_dir))


def _write_cache(load_dataset: Callable[[], tuple], cache_dir: Path) -> Path:
    """Write the package's arrays as ``images/cellNNNN.png`` + ``labels.csv`` under ``cache_dir``, once."""
    if _complete(cache_dir):
        return cache_dir
    images, probabilities, types = load_dataset()
    (cache_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for number, (pixels, probability, cell_type) in enumerate(zip(images, probabilities, types), start=1):
        name = f"images/cell{number:04d}.png"
        Image.fromarray(np.asarray(pixels)).save(cache_dir / name)
        lines.append(f"{name} {float(probability)!r} {cell_type}")
    # labels.csv is written last, so an interrupted run leaves an incomplete (and so rebuilt) cache.
    (cache_dir / LABELS_FILE).write_text("\n".join(lines) + "\n")
    return cache_dir


def elpv_data_dir(cache_dir: str | Path | None = None) -> Path:
    """The folder holding ``labels.csv`` and ``images/``: inside the package, or the cache it was written to."""
    try:
        import elpv_dataset
    except ImportError as exc:
        raise DataError(f"the ELPV layout needs the elpv-dataset package: {INSTALL_HINT}") from exc
    packaged = Path(elpv_dataset.__file__).parent / "data"
    if _complete(packaged):
        return packaged
    from elpv_dataset.utils import load_dataset

    return _write_cache(load_dataset, Path(cache_dir) if cache_dir is not None else default_cache_dir())


def _defect_type(probability: float) -> str:
    return "defective" if probability >= 1 - 1e-6 else f"uncertain_p{probability:.2f}"


def elpv(
    root: str | Path | None = None,
    *,
    test_ratio: float = 0.25,
    seed: int = 0,
    include_uncertain: bool = False,
    cell_type: str | None = None,
    cache_dir: str | Path | None = None,
) -> Split:
    """ELPV solar cells as a split (see the module docstring for labels, split and storage).

    ``root`` is a folder with ``labels.csv`` and ``images/``; by default the installed package's data.
    ``cell_type`` keeps only ``"mono"`` or ``"poly"`` cells.
    """
    if cell_type is not None and cell_type not in CELL_TYPES:
        raise DataError(f"cell_type must be one of {', '.join(CELL_TYPES)} or None, got {cell_type!r}")
    test_ratio = check_fraction(test_ratio, "test_ratio")
    data_dir = Path(root) if root is not None else elpv_data_dir(cache_dir)
    rows = [row for row in read_labels(data_dir) if cell_type is None or row[2] == cell_type]
    normals = [path for path, probability, _ in rows if probability == 0]
    if not normals:
        raise DataError(f"no normal (defect probability 0) images in {data_dir / LABELS_FILE}")
    train, test_good = split_normals(
        normals, 1.0 - test_ratio, seed, what="normal ELPV cells", ratio_text=f"test_ratio={test_ratio}"
    )
    anomalies = [
        Sample(path, ANOMALOUS, _defect_type(probability))
        for path, probability, _ in sorted(rows)
        if probability >= 1 - 1e-6 or (include_uncertain and probability > 0)
    ]
    test = [Sample(p, NORMAL, "good") for p in test_good] + anomalies
    return Split(train=[Sample(p, NORMAL, "good") for p in train], test=test)
