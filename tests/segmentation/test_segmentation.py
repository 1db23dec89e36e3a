"""Part segmentation: the annotation folder, the Otsu fallback partition and the Mask R-CNN segmenter."""

import numpy as np
import pytest
import torch
from PIL import Image

from vadkit.data import Transform
from vadkit.errors import DataError
from vadkit.segmentation import OtsuPartition, read_part_annotations
from vadkit.segmentation.maskrcnn import fine_tune, instance_targets
from vadkit.segmentation.otsu import otsu_levels


def test_annotations_merge_global_parts_first_then_local_ones_over_them(part_folder):
    annotations = read_part_annotations(part_folder)
    assert annotations.names == ("body", "cap") and len(annotations.images) == 6
    labels = annotations.label_map(0, (64, 64))
    body = np.asarray(Image.open(part_folder / "000" / "body.png")) > 0
    cap = np.asarray(Image.open(part_folder / "000" / "cap.png")) > 0
    assert (labels[cap] == 2).all()                       # the cap lies on the body and wins
    assert (labels[body & ~cap] == 1).all() and (labels[~body] == 0).all()


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "parts.txt").unlink(), "no parts.txt"),
    (lambda f: (f / "parts.txt").write_text("body everywhere\n"), "line 1"),
    (lambda f: (f / "000" / "lid.png").write_bytes((f / "000" / "cap.png").read_bytes()), "does not declare"),
])
def test_a_broken_annotation_folder_is_one_clear_error(part_folder, tmp_path, change, message):
    import shutil

    copy = tmp_path / "parts"
    shutil.copytree(part_folder, copy)
    change(copy)
    with pytest.raises(DataError, match=message):
        read_part_annotations(copy)


def test_otsu_splits_two_brightness_levels_where_they_are():
    values = torch.cat([torch.full((1, 300), 0.2), torch.full((1, 100), 0.9)], dim=1)
    level = float(otsu_levels(values)[0])
    assert 0.2 < level <= 0.9
    image = torch.full((1, 3, 32, 32), -1.0)
    image[:, :, 8:24, 8:24] = 1.0                          # a bright square; a one-pixel speck outside it
    image[:, :, 2, 2] = 1.0
    partition = OtsuPartition(kernel=3)(image)
    assert partition.shape == (1, 2, 32, 32) and torch.equal(partition.sum(1), torch.ones(1, 32, 32))
    assert partition[0, 1, 8:24, 8:24].all() and partition[0, 1].sum() == 256   # the speck is opened away


def test_instances_are_the_connected_components_of_each_part():
    labels = np.zeros((20, 20), dtype=np.int64)
    labels[2:6, 2:6] = 1
    labels[10:15, 10:18] = 1
    labels[3:5, 12:14] = 2
    targets = instance_targets(labels)
    assert targets["labels"].tolist() == [1, 1, 2]
    assert targets["boxes"][1].tolist() == [10, 10, 18, 15] and targets["masks"].shape == (3, 20, 20)


def test_the_mask_rcnn_fine_tunes_on_the_annotations_and_returns_a_partition(part_folder):
    """Two steps (its quality after a real fine-tuning is measured in benchmarks/bench_sadsem.py): the loss is
    finite, the output is a partition of the parts plus background, and its trained state reloads."""
    annotations = read_part_annotations(part_folder)
    model, info = fine_tune(annotations, Transform(image_size=64), steps=2, progress=False)
    assert info["steps"] == 2 and all(np.isfinite(info["losses"]))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        partition = model(images)
    assert partition.shape == (2, 3, 64, 64) and torch.equal(partition.sum(1), torch.ones(2, 64, 64))
    state = model.trainable_state()
    assert state and not any(key.startswith("backbone.body.") for key in state)
    again, _ = fine_tune(annotations, Transform(image_size=64), steps=1, progress=False)
    again.load_trainable_state(state)
    with torch.no_grad():
        torch.testing.assert_close(again(images), partition)
