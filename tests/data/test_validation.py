"""The validation part of a split: held-out training normals or a folder of its own."""

import pytest

from vadkit.data import Sample, Split, hold_out_validation, validation_folder, with_validation
from vadkit.data.validation import DEFAULT_VAL_RATIO, MIN_TRAIN_FOR_DEFAULT_VAL, default_val_ratio
from vadkit.errors import DataError


def split_of(n_train: int) -> Split:
    train = [Sample(f"/data/train/{i:03d}.png") for i in range(n_train)][::-1]  # not in path order
    return Split(train=train, test=[Sample("/data/test/x.png", 1, "crack")])


def test_hold_out_moves_a_seeded_fraction_and_keeps_the_rest_in_order():
    split = split_of(40)
    held = hold_out_validation(split, 0.1, seed=0)
    assert len(held.val) == 4 and len(held.train) == 36 and held.test == split.test
    assert set(held.val).isdisjoint(held.train) and set(held.val) | set(held.train) == set(split.train)
    assert held.train == [s for s in split.train if s not in held.val]  # the layout's order is kept
    assert hold_out_validation(split, 0.1, seed=0) == held
    assert hold_out_validation(split, 0.1, seed=1).val != held.val
    # the rule is the same whatever order the layout listed the images in
    reordered = Split(train=sorted(split.train, key=lambda s: str(s.image_path)), test=split.test)
    assert set(hold_out_validation(reordered, 0.1, seed=0).val) == set(held.val)


def test_the_default_holds_out_a_tenth_from_twenty_training_images_on():
    assert default_val_ratio(MIN_TRAIN_FOR_DEFAULT_VAL - 1) == 0.0
    assert default_val_ratio(MIN_TRAIN_FOR_DEFAULT_VAL) == DEFAULT_VAL_RATIO == 0.1
    assert len(with_validation(split_of(19)).val) == 0
    assert len(with_validation(split_of(20)).val) == 2
    assert with_validation(split_of(30), val_ratio=0).val == []


def test_bad_ratios_and_both_sources_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="val_ratio must be a number in"):
        hold_out_validation(split_of(10), 1.0)
    with pytest.raises(DataError, match="leaves no training image"):
        hold_out_validation(split_of(1), 0.5)
    with pytest.raises(DataError, match="not both"):
        with_validation(split_of(30), val_ratio=0.2, val=tmp_path)


def test_a_flat_validation_folder_is_normal_images(tmp_path, write_image):
    for name in ("b.png", "a.png"):
        write_image(tmp_path / "val" / name)
    samples = validation_folder(tmp_path / "val")
    assert [s.image_path.name for s in samples] == ["a.png", "b.png"] and {s.label for s in samples} == {0}
    split = with_validation(split_of(30), val=tmp_path / "val")
    assert len(split.train) == 30 and split.val == samples  # training images untouched


def test_a_structured_validation_folder_has_defects_with_masks(tmp_path, write_image):
    root = tmp_path / "val"
    write_image(root / "good" / "n.png")
    write_image(root / "crack" / "d.png")
    write_image(root / "masks" / "crack" / "d_mask.png", value=255)
    samples = validation_folder(root)
    defects = [s for s in samples if s.label == 1]
    assert len(samples) == 2 and len(defects) == 1 and defects[0].defect_type == "crack"
    assert defects[0].mask_path.name == "d_mask.png"


def test_unusable_validation_folders_name_the_fix(tmp_path, write_image):
    with pytest.raises(DataError, match="does not exist; check --val"):
        validation_folder(tmp_path / "missing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="neither images nor a good/ folder"):
        validation_folder(tmp_path / "empty")
