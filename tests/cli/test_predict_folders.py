"""`vadkit predict` on folders as users keep them: nested, with bad files, at the images' own resolution."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vadkit
from vadkit.cli import main
from vadkit.data import load_split


@pytest.fixture(scope="module")
def model_file(mvtec_folder, tmp_path_factory):
    model = vadkit.create_model("padim", image_size=64)
    model.fit(load_split("mvtec", mvtec_folder).train, progress=False)
    model.calibrate(load_split("mvtec", mvtec_folder).test, progress=False)
    return model.save(tmp_path_factory.mktemp("model") / "m.vad")


@pytest.fixture
def nested(mvtec_folder, tmp_path):
    """data/test with good/ and spot/ subfolders, as users keep a test folder."""
    root = tmp_path / "data" / "test"
    shutil.copytree(mvtec_folder / "test", root)
    return root


def predict(model_file, *args):
    result = CliRunner().invoke(main, ["predict", "--model", str(model_file), *map(str, args), "--quiet"])
    return result


def lines_of(out):
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_a_folder_of_subfolders_is_searched_in_sorted_order_with_relative_paths(model_file, nested, tmp_path):
    result = predict(model_file, nested, "--out", tmp_path / "p", "--no-overlays")
    assert result.exit_code == 0, result.output
    lines = lines_of(tmp_path / "p")
    expected = sorted(p.relative_to(nested).as_posix() for p in nested.rglob("*.png"))
    assert [line["path"] for line in lines] == expected == [f"good/{i:03d}.png" for i in range(4)] + \
        [f"spot/{i:03d}.png" for i in range(4)]
    assert all(line["file"] == str((nested / line["path"]).resolve()) for line in lines)
    assert all(line["label"] == (1 if line["path"].startswith("spot") else 0) for line in lines)


def test_no_recursive_takes_the_folder_s_own_images_only(model_file, nested, tmp_path):
    result = predict(model_file, nested, "--out", tmp_path / "p", "--no-recursive")
    assert result.exit_code == 2 and "no images in folder" in result.output and "--no-recursive" in result.output
    shutil.copy(nested / "good" / "000.png", nested / "top.png")
    result = predict(model_file, nested, "--out", tmp_path / "p", "--no-recursive", "--no-overlays")
    assert result.exit_code == 0, result.output
    assert [line["path"] for line in lines_of(tmp_path / "p")] == ["top.png"]


def test_skipped_files_get_a_line_with_the_reason(model_file, nested, tmp_path):
    (nested / "spot" / "001.png").write_bytes(b"not a png")
    result = predict(model_file, nested, "--out", tmp_path / "p", "--skip-bad-images", "--no-overlays")
    assert result.exit_code == 0, result.output
    lines = lines_of(tmp_path / "p")
    assert len(lines) == 8
    skipped = [line for line in lines if "skipped" in line]
    assert [line["path"] for line in skipped] == ["spot/001.png"]
    assert skipped[0]["score"] is None and skipped[0]["label"] is None and "001.png" in skipped[0]["skipped"]
    assert all(isinstance(line["score"], float) for line in lines if "skipped" not in line)


def test_full_resolution_maps_and_overlays_have_the_images_size(model_file, tmp_path):
    image = np.zeros((90, 150, 3), np.uint8)
    image[:, :, 1] = np.linspace(0, 255, 150).astype(np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "wide.png")
    result = predict(model_file, tmp_path / "in", "--out", tmp_path / "p", "--full-resolution", "--save-maps")
    assert result.exit_code == 0, result.output
    line = lines_of(tmp_path / "p")[0]
    anomaly_map = np.load(line["map"])
    assert anomaly_map.shape == (90, 150) and np.isfinite(anomaly_map).all()
    assert Image.open(line["overlay"]).size == (3 * 150, 90)
    result = predict(model_file, tmp_path / "in", "--out", tmp_path / "q", "--save-maps")
    assert np.load(lines_of(tmp_path / "q")[0]["map"]).shape == (64, 64)


def test_map_to_original_inverts_resize_and_crop():
    from vadkit.data import Transform

    plain = Transform(image_size=64)
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    back = plain.map_to_original(ramp, (32, 128))
    assert back.shape == (32, 128) and np.all(np.diff(back, axis=1) >= -1e-6)  # the ramp survives the resize
    cropped = Transform(image_size=80, crop_size=64)
    back = cropped.map_to_original(np.ones((64, 64), np.float32), (160, 160))
    assert back.shape == (160, 160)
    # the crop keeps 64 of 80 rows/columns, offset 8: 16 + 128 + 16 original pixels
    assert np.isnan(back[:16]).all() and np.isnan(back[:, -16:]).all() and np.isfinite(back[16:144, 16:144]).all()
    with pytest.raises(ValueError, match="output size"):
        plain.map_to_original(np.zeros((10, 10)), (32, 32))
