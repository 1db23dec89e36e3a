"""Fixtures shared by the model and CLI tests: tiny generated MVTec-style folders.

Generated images are for unit tests only (quality claims need real data, see tests/*/test_*real*).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 64


def texture(rng: np.random.Generator) -> np.ndarray:
    """A stripe texture with a random phase and mild noise: what 'normal' looks like in these tests."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    phase = rng.uniform(0, 2 * np.pi)
    base = 128 + 60 * np.sin(x / 3.0 + phase)
    image = base[..., None] + rng.normal(0, 4, (SIZE, SIZE, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def with_defect(image: np.ndarray, top: int, left: int, size: int = 14) -> tuple[np.ndarray, np.ndarray]:
    image = image.copy()
    image[top:top + size, left:left + size] = (255, 30, 30)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[top:top + size, left:left + size] = 255
    return image, mask


def make_mvtec_folder(root: Path, n_train: int = 12, n_good: int = 4, n_bad: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, kind, count in (("train", "good", n_train), ("test", "good", n_good)):
        folder = root / split / kind
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(texture(rng)).save(folder / f"{i:03d}.png")
    (root / "test" / "spot").mkdir(parents=True)
    (root / "ground_truth" / "spot").mkdir(parents=True)
    for i in range(n_bad):
        image, mask = with_defect(texture(rng), int(rng.integers(4, 40)), int(rng.integers(4, 40)))
        Image.fromarray(image).save(root / "test" / "spot" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "ground_truth" / "spot" / f"{i:03d}_mask.png")
    return root


@pytest.fixture(scope="session")
def mvtec_folder(tmp_path_factory) -> Path:
    return make_mvtec_folder(tmp_path_factory.mktemp("tiny_mvtec"))


def shared_datasets() -> Path:
    import os

    return Path(os.environ.get("VADKIT_SHARED_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps"]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through playwright (Debian's chromium package; playwright never downloads a browser
    here). Skips with the reason when either is missing."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip("Chromium not found at /usr/bin/chromium: install Debian's chromium package "
                    "(apt-get install chromium) to run the browser tests")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def open_watched(browser, page_file: Path, viewport=(1280, 900)):
    """Open a local page in a new browser context, recording console errors, page errors and every request:
    (context, page, problems, requests)."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    problems, requests = [], []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(Path(page_file).as_uri())
    return context, page, problems, requests


@pytest.fixture(scope="session")
def efficientad_home(mvtec_folder, tmp_path_factory) -> Path:
    """A ``VADKIT_HOME`` whose weight cache holds a tiny EfficientAD teacher for mobilenet_v2 (two distillation
    steps on the 64-px generated images): what `vadkit distill-teacher` leaves there, for tests that build the
    method without a ``teacher`` path (the contract tests)."""
    from vadkit.models.pdn import default_teacher_path, distill_teacher, image_source_paths, save_teacher

    home = tmp_path_factory.mktemp("vadkit_home")
    source = str(mvtec_folder / "train")
    teacher, metadata = distill_teacher(image_source_paths(source), steps=2, image_size=64, batch_size=4, lr=1e-3,
                                        stat_images=12, source=source, progress=False)
    save_teacher(default_teacher_path("mobilenet_v2", home / "weights"), teacher, metadata)
    return home


def assert_detects_planted_defects(model, split, min_auroc: float = 0.9):
    """A fitted model on the generated test images (red squares on a stripe texture): finite maps of the input
    size, image AUROC of at least ``min_auroc``, and maps higher inside the defect masks than outside.
    Returns ``(test dataset, prediction)`` for further checks."""
    from vadkit.data import ImageDataset
    from vadkit.metrics import auroc

    test = ImageDataset(split.test, model.transform)
    prediction = model.predict(test, progress=False)
    assert prediction.maps.shape == (len(test), *model.input_size_) and np.isfinite(prediction.maps).all()
    assert auroc(test.labels, prediction.scores) >= min_auroc
    masks = test.masks_array()
    inside = np.mean([m[mask].mean() for m, mask in zip(prediction.maps, masks) if mask.any()])
    outside = np.mean([m[~mask].mean() for m, mask in zip(prediction.maps, masks) if mask.any()])
    assert inside > outside  # the map lights up on the defect
    return test, prediction


def assert_reloads_identically(model, test, prediction, path: Path) -> None:
    """Saved to ``path`` and loaded back, ``model`` predicts exactly ``prediction`` on ``test``."""
    import vadkit

    again = vadkit.load(model.save(path)).predict(test, progress=False)
    np.testing.assert_array_equal(again.scores, prediction.scores)
    np.testing.assert_array_equal(again.maps, prediction.maps)


@pytest.fixture(scope="session")
def separated_patchcore(mvtec_folder):
    """A small PatchCore fitted and calibrated on ``mvtec_folder``, its image threshold moved into the middle of
    the gap between the classes' scores. An F1-optimal threshold sits exactly on a calibration image's score,
    where a 1e-7 difference (PyTorch against ONNX, one batch against another) flips a label; in the gap, label
    comparisons mean something. Shared by the export and serving tests; do not modify it."""
    import vadkit
    from vadkit.data import load_split

    split = load_split("mvtec", mvtec_folder)
    model = vadkit.create_model("patchcore", image_size=64).fit(split.train, progress=False)
    model.calibrate(split.test, progress=False)
    scores = model.predict(split.test, progress=False).scores
    labels = np.array([s.label for s in split.test])
    model.threshold = float(scores[labels == 0].max() + scores[labels == 1].min()) / 2
    return model



def make_part_annotations(folder: Path, n: int = 6, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "parts.txt").write_text("cap local\nbody global   # listed after the cap: merged first all the same\n")
    for i in range(n):
        image = np.full((size, size, 3), 40, np.uint8) + rng.integers(0, 10, (size, size, 3), dtype=np.uint8)
        top, left = (int(v) for v in rng.integers(8, 14, 2))
        body = np.zeros((size, size), bool)
        body[top:top + 38, left:left + 32] = True
        cap = np.zeros((size, size), bool)
        cap[top + 6:top + 16, left + 10:left + 21] = True
        image[body], image[cap] = (60, 140, 220), (230, 80, 40)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}").mkdir(exist_ok=True)
        Image.fromarray(body.astype(np.uint8) * 255).save(folder / f"{i:03d}" / "body.png")
        Image.fromarray(cap.astype(np.uint8) * 255).save(folder / f"{i:03d}" / "cap.png")
    return folder


@pytest.fixture(scope="session")
def part_folder(tmp_path_factory) -> Path:
    return make_part_annotations(tmp_path_factory.mktemp("parts"))
