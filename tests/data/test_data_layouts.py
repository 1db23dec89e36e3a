"""Layouts on small generated folders: MVTec, plain folders, MTD, the registry, and ELPV's storage paths."""

from __future__ import annotations

import random
import sys
import types
import warnings

import numpy as np
import pytest

from vadkit.data import LAYOUTS, layout_options, load_split
from vadkit.data.elpv import read_labels
from vadkit.errors import DataError

# -- MVTec -----------------------------------------------------------------------------------------------


@pytest.fixture
def mvtec_category(tmp_path, write_image, write_mask):
    """tmp/cable: 3 train, 2 test good, scratch a/b/c with masks a_mask.png, b.png (other naming), none for
    c, an orphan z_mask.png, and ground_truth/hole/ for a type that has no test images."""
    root = tmp_path / "cable"
    for i in range(3):
        write_image(root / "train" / "good" / f"{i:03d}.png")
    for i in range(2):
        write_image(root / "test" / "good" / f"{i:03d}.png")
    for name in ("a", "b", "c"):
        write_image(root / "test" / "scratch" / f"{name}.png")
    mask = np.ones((16, 16), dtype=bool)
    write_mask(root / "ground_truth" / "scratch" / "a_mask.png", mask)
    write_mask(root / "ground_truth" / "scratch" / "b.png", mask)
    write_mask(root / "ground_truth" / "scratch" / "z_mask.png", mask)
    write_mask(root / "ground_truth" / "hole" / "h_mask.png", mask)
    (root / "test" / "scratch" / "readme.txt").write_text("not an image")
    return root


def test_mvtec_labels_types_and_mask_pairing(mvtec_category):
    with pytest.warns(UserWarning) as record:
        split = load_split("mvtec", mvtec_category)
    assert len(split.train) == 3 and all(s.label == 0 and s.defect_type == "good" for s in split.train)
    by_name = {(s.defect_type, s.image_path.name): s for s in split.test}
    assert sorted(by_name) == [
        ("good", "000.png"), ("good", "001.png"), ("scratch", "a.png"), ("scratch", "b.png"), ("scratch", "c.png")
    ]
    assert by_name["good", "000.png"].label == 0 and by_name["good", "000.png"].mask_path is None
    assert by_name["scratch", "a.png"].mask_path.name == "a_mask.png"
    assert by_name["scratch", "b.png"].mask_path.name == "b.png"
    assert by_name["scratch", "c.png"].mask_path is None and by_name["scratch", "c.png"].label == 1
    messages = [str(w.message) for w in record]
    orphan = next(m for m in messages if "no matching image" in m)
    assert "2 mask(s)" in orphan and "z_mask.png" in orphan and "h_mask.png" in orphan
    assert any("c.png" in m and "no ground-truth mask" in m for m in messages)


def test_mvtec_prefers_mask_suffix_over_plain_name(tmp_path, write_image, write_mask):
    root = tmp_path / "cat"
    write_image(root / "train" / "good" / "0.png")
    write_image(root / "test" / "cut" / "x.png")
    write_mask(root / "ground_truth" / "cut" / "x_mask.png", np.ones((2, 2), bool))
    write_mask(root / "ground_truth" / "cut" / "x.bmp", np.ones((2, 2), bool))
    with pytest.warns(UserWarning, match="x.bmp"):  # the unused one is reported as an orphan
        split = load_split("mvtec", root)
    assert split.test[0].mask_path.name == "x_mask.png"


def test_mvtec_without_ground_truth_is_quiet(tmp_path, write_image):
    root = tmp_path / "bottle"
    write_image(root / "train" / "good" / "0.png")
    write_image(root / "test" / "broken" / "1.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = load_split("mvtec", root)
    assert [(s.label, s.mask_path) for s in split.test] == [(1, None)]


def _two_categories(tmp_path, write_image):
    for category in ("bottle", "cable"):
        write_image(tmp_path / "ds" / category / "train" / "good" / "0.png")
        write_image(tmp_path / "ds" / category / "test" / "good" / f"{category}.png")
    (tmp_path / "ds" / "notes").mkdir()  # not a category
    return tmp_path / "ds"


def test_mvtec_category_selection(tmp_path, write_image):
    root = _two_categories(tmp_path, write_image)
    split = load_split("mvtec", root, category="cable")
    assert [s.image_path.name for s in split.test] == ["cable.png"]
    assert load_split("mvtec", root / "bottle", category="bottle").test[0].image_path.name == "bottle.png"


def test_mvtec_several_categories_need_a_choice(tmp_path, write_image):
    root = _two_categories(tmp_path, write_image)
    with pytest.raises(DataError, match="bottle, cable") as info:
        load_split("mvtec", root)
    assert "category=" in str(info.value)
    with pytest.raises(DataError, match="no MVTec category 'carpet'.*bottle, cable"):
        load_split("mvtec", root, category="carpet")


def test_mvtec_single_category_is_picked(tmp_path, write_image):
    write_image(tmp_path / "ds" / "only" / "train" / "good" / "0.png")
    write_image(tmp_path / "ds" / "only" / "test" / "good" / "1.png")
    assert load_split("mvtec", tmp_path / "ds").test[0].image_path.parts[-4] == "only"


def test_mvtec_missing_test_folder_is_an_error(tmp_path, write_image):
    write_image(tmp_path / "cat" / "train" / "good" / "0.png")
    with pytest.raises(DataError, match="test"):
        load_split("mvtec", tmp_path / "cat")


def test_mvtec_empty_train_folder_is_an_error(tmp_path, write_image):
    (tmp_path / "cat" / "train" / "good").mkdir(parents=True)
    write_image(tmp_path / "cat" / "test" / "good" / "1.png")
    with pytest.raises(DataError, match="no images in .*train"):
        load_split("mvtec", tmp_path / "cat")


def test_mvtec_not_a_dataset(tmp_path):
    (tmp_path / "random").mkdir()
    with pytest.raises(DataError, match="not an MVTec-style"):
        load_split("mvtec", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_split("mvtec", tmp_path / "missing")
    with pytest.raises(DataError, match="needs a dataset folder"):
        load_split("mvtec")


# -- plain folders ---------------------------------------------------------------------------------------


@pytest.fixture
def line_folder(tmp_path, write_image, write_mask):
    """tmp/line: good/ (10), crack/ (x, y), scratch/ (x), masks/crack/x_mask.png, masks/scratch/x.png,
    masks/orphan.png."""
    root = tmp_path / "line"
    for i in range(10):
        write_image(root / "good" / f"g{i:02d}.png")
    for name in ("x", "y"):
        write_image(root / "crack" / f"{name}.png")
    write_image(root / "scratch" / "x.png")
    write_mask(root / "masks" / "crack" / "x_mask.png", np.ones((4, 4), bool))
    write_mask(root / "masks" / "scratch" / "x.png", np.ones((4, 4), bool))
    write_mask(root / "masks" / "orphan.png", np.ones((4, 4), bool))
    return root


def _goods(split):
    return [s.image_path.name for s in split.train], [s.image_path.name for s in split.test if s.label == 0]


def test_folder_defaults_find_defects_and_masks(line_folder):
    with pytest.warns(UserWarning) as record:
        split = load_split("folder", line_folder)
    defects = {(s.defect_type, s.image_path.name): s.mask_path for s in split.test if s.label == 1}
    assert set(defects) == {("crack", "x.png"), ("crack", "y.png"), ("scratch", "x.png")}
    # Same stem in two defect folders: each takes the mask from its own type's subfolder.
    assert defects["crack", "x.png"].relative_to(line_folder).as_posix() == "masks/crack/x_mask.png"
    assert defects["scratch", "x.png"].relative_to(line_folder).as_posix() == "masks/scratch/x.png"
    assert defects["crack", "y.png"] is None
    messages = " | ".join(str(w.message) for w in record)
    assert "orphan.png" in messages and "crack/y.png" in messages


def test_folder_split_rule_sizes_and_disjointness(line_folder):
    with pytest.warns(UserWarning):
        split = load_split("folder", line_folder, test_ratio=0.2, seed=0)
    train, test = _goods(split)
    assert len(train) == 8 and len(test) == 2  # int(0.8 * 10)
    assert not set(train) & set(test) and sorted(train + test) == [f"g{i:02d}.png" for i in range(10)]
    assert all(s.label == 0 for s in split.train)
    # The documented rule, re-implemented: sort, Random(seed).shuffle, first int(0.8 n) train.
    names = sorted(f"g{i:02d}.png" for i in range(10))
    random.Random(0).shuffle(names)
    assert train == names[:8]


def test_folder_split_is_deterministic_and_seeded(line_folder):
    with pytest.warns(UserWarning):
        first = _goods(load_split("folder", line_folder, seed=0))
        again = _goods(load_split("folder", line_folder, seed=0))
        other = _goods(load_split("folder", line_folder, seed=1))
    assert first == again
    assert set(first[1]) != set(other[1])


def test_folder_explicit_dirs_without_root(tmp_path, write_image, write_mask):
    for i in range(4):
        write_image(tmp_path / "ok" / f"{i}.png")
    write_image(tmp_path / "ng" / "d.png")
    write_mask(tmp_path / "gt" / "d_mask.png", np.ones((2, 2), bool))
    split = load_split(
        "folder", normal_dir=tmp_path / "ok", defect_dirs=[tmp_path / "ng"], mask_dir=tmp_path / "gt", test_ratio=0.5
    )
    assert len(split.train) == 2 and [s.label for s in split.test] == [0, 0, 1]
    assert split.test[-1].defect_type == "ng" and split.test[-1].mask_path.name == "d_mask.png"


def test_folder_test_ratio_zero_trains_on_every_good_image(line_folder):
    with pytest.warns(UserWarning):
        split = load_split("folder", line_folder, test_ratio=0, defect_dirs=["crack"])
    assert len(split.train) == 10 and all(s.label == 1 for s in split.test) and len(split.test) == 2


def test_folder_empty_split_says_count_and_ratio(tmp_path, write_image):
    write_image(tmp_path / "good" / "only.png")
    with pytest.raises(DataError) as info:
        load_split("folder", tmp_path, test_ratio=0.5)
    assert "no training image" in str(info.value) and "1 good images" in str(info.value)
    assert "test_ratio=0.5" in str(info.value)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, "0.2"])
def test_folder_rejects_ratio_outside_range(tmp_path, write_image, ratio):
    write_image(tmp_path / "good" / "a.png")
    with pytest.raises(DataError, match="test_ratio"):
        load_split("folder", tmp_path, test_ratio=ratio)


def test_folder_empty_good_folder_is_an_error(tmp_path):
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images in .*good"):
        load_split("folder", tmp_path)


def test_folder_missing_mask_dir_is_an_error(line_folder):
    with pytest.raises(DataError, match="mask folder"):
        load_split("folder", line_folder, mask_dir="labels")


def test_folder_ambiguous_masks_are_an_error(tmp_path, write_image, write_mask):
    for i in range(3):
        write_image(tmp_path / "good" / f"{i}.png")
    write_image(tmp_path / "bad" / "x.png")
    write_mask(tmp_path / "masks" / "one" / "x.png", np.ones((2, 2), bool))
    write_mask(tmp_path / "masks" / "two" / "x.png", np.ones((2, 2), bool))
    with pytest.raises(DataError, match="several masks"):
        load_split("folder", tmp_path)


# -- MTD (synthetic copy of the published layout) --------------------------------------------------------


def test_mtd_rule_on_a_small_copy(tmp_path, write_image, write_mask):
    for i in range(10):
        write_image(tmp_path / "MT_Free" / "Imgs" / f"exp{i}_num_{i}.jpg")
        write_mask(tmp_path / "MT_Free" / "Imgs" / f"exp{i}_num_{i}.png", np.zeros((2, 2), bool))
    for cls in ("Blowhole", "Break", "Crack", "Fray", "Uneven"):
        write_image(tmp_path / f"MT_{cls}" / "Imgs" / f"{cls}.jpg")
        write_mask(tmp_path / f"MT_{cls}" / "Imgs" / f"{cls}.png", np.ones((2, 2), bool))
    split = load_split("mtd", tmp_path)
    names = sorted(f"exp{i}_num_{i}.jpg" for i in range(10))
    random.Random(0).shuffle(names)
    assert [s.image_path.name for s in split.train] == names[:8]
    good = [s for s in split.test if s.label == 0]
    assert [s.image_path.name for s in good] == names[8:] and all(s.mask_path is None for s in good)
    bad = [s for s in split.test if s.label == 1]
    assert [s.defect_type for s in bad] == ["Blowhole", "Break", "Crack", "Fray", "Uneven"]
    assert all(s.mask_path == s.image_path.with_suffix(".png") for s in bad)


def test_mtd_missing_class_folder_is_an_error(tmp_path, write_image):
    write_image(tmp_path / "MT_Free" / "Imgs" / "a.jpg")
    write_image(tmp_path / "MT_Free" / "Imgs" / "b.jpg")
    with pytest.raises(DataError, match="MT_Blowhole"):
        load_split("mtd", tmp_path)


# -- registry --------------------------------------------------------------------------------------------


def test_registry_has_the_layouts():
    assert {"mvtec", "folder", "mtd", "elpv"} <= set(LAYOUTS)
    assert layout_options("folder") == ["normal_dir", "defect_dirs", "mask_dir", "test_ratio", "seed"]


def test_unknown_layout_lists_known_ones(tmp_path):
    with pytest.raises(DataError, match="unknown layout 'visa'.*elpv, folder, mtd, mvtec"):
        load_split("visa", tmp_path)


def test_unknown_option_lists_the_layout_options(tmp_path):
    with pytest.raises(DataError) as info:
        load_split("mvtec", tmp_path, categroy="bottle")
    assert "categroy" in str(info.value) and "category" in str(info.value).split("options are:")[1]
    with pytest.raises(DataError, match="train_ratio"):
        load_split("mtd", tmp_path, test_ratio=0.2)


# -- ELPV storage and labels, without the real package ---------------------------------------------------


def _elpv_folder(root, write_image, rows):
    lines = []
    for i, (probability, cell_type) in enumerate(rows):
        write_image(root / "images" / f"cell{i:04d}.png")
        lines.append(f"images/cell{i:04d}.png  {probability}  {cell_type}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


ROWS = [(0.0, "mono")] * 4 + [(0.0, "poly")] * 4 + [(1 / 3, "mono"), (2 / 3, "poly"), (1.0, "mono"), (1.0, "poly")]


def test_elpv_labels_and_uncertain_cells(tmp_path, write_image):
    root = _elpv_folder(tmp_path, write_image, ROWS)
    split = load_split("elpv", root)
    assert len(split.train) == 6 and [s.label for s in split.test] == [0, 0, 1, 1]  # int(0.75 * 8) = 6
    assert {s.defect_type for s in split.test if s.label} == {"defective"}
    split = load_split("elpv", root, include_uncertain=True)
    types_ = sorted(s.defect_type for s in split.test if s.label)
    assert types_ == ["defective", "defective", "uncertain_p0.33", "uncertain_p0.67"]
    mono = load_split("elpv", root, cell_type="mono")
    assert len(mono.train) + sum(1 for s in mono.test if s.label == 0) == 4
    with pytest.raises(DataError, match="mono, poly"):
        load_split("elpv", root, cell_type="cigs")


def test_elpv_bad_labels_line_is_named(tmp_path):
    (tmp_path / "labels.csv").write_text("images/a.png  0.0  mono\nimages/b.png  maybe\n")
    with pytest.raises(DataError, match="line 2"):
        read_labels(tmp_path)


def test_elpv_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)  # makes `import elpv_dataset` fail
    with pytest.raises(DataError, match="pip install elpv-dataset"):
        load_split("elpv")


def test_elpv_arrays_only_package_is_cached_once_as_png(tmp_path, monkeypatch):
    calls = []

    def load_dataset():
        calls.append(1)
        images = np.stack([np.full((6, 6), v, dtype=np.uint8) for v in (0, 50, 100, 150, 200)])
        return images, np.array([0.0, 0.0, 0.0, 0.0, 1.0]), np.array(["mono"] * 5)

    package = types.ModuleType("elpv_dataset")
    package.__file__ = str(tmp_path / "pkg" / "__init__.py")  # no data/ folder next to it
    utils = types.ModuleType("elpv_dataset.utils")
    utils.load_dataset = load_dataset
    package.utils = utils
    monkeypatch.setitem(sys.modules, "elpv_dataset", package)
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", utils)
    monkeypatch.setenv("VADKIT_HOME", str(tmp_path / "home"))

    split = load_split("elpv")
    cache = tmp_path / "home" / "elpv"
    assert all(s.image_path.parent == cache / "images" for s in split.train + split.test)
    assert len(split.train) == 3 and [s.label for s in split.test] == [0, 1]
    from vadkit.data.io import load_image

    anomalous = next(s for s in split.test if s.label == 1)
    assert np.asarray(load_image(anomalous.image_path))[0, 0, 0] == 200
    again = load_split("elpv")
    assert calls == [1] and again == split
    explicit = load_split("elpv", cache_dir=tmp_path / "elsewhere")
    assert calls == [1, 1] and explicit.train[0].image_path.parent == tmp_path / "elsewhere" / "images"


def test_folder_mask_of_another_type_is_not_borrowed(tmp_path, write_image, write_mask):
    for i in range(3):
        write_image(tmp_path / "good" / f"{i}.png")
    write_image(tmp_path / "crack" / "x.png")
    write_image(tmp_path / "scratch" / "x.png")
    write_image(tmp_path / "scratch" / "flat.png")
    write_mask(tmp_path / "masks" / "crack" / "x_mask.png", np.ones((2, 2), bool))
    write_mask(tmp_path / "masks" / "flat_mask.png", np.ones((2, 2), bool))  # outside type folders: any type
    with pytest.warns(UserWarning, match="scratch/x.png"):  # reported as an anomalous image without mask
        split = load_split("folder", tmp_path)
    masks = {(s.defect_type, s.image_path.name): s.mask_path for s in split.test if s.label == 1}
    assert masks["crack", "x.png"].parent.name == "crack"
    assert masks["scratch", "x.png"] is None
    assert masks["scratch", "flat.png"].name == "flat_mask.png"
