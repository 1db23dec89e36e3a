"""vadkit.edge: bundles on disk, the torch-free runtime, parity measurement, int8 quantisation and
`vadkit export`. (Every method's export parity is a contract test: tests/models/test_contract.py.)"""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vadkit
from vadkit.data import load_split
from vadkit.edge import Runtime, check_parity, export_model, quantize_bundle, read_bundle
from vadkit.edge.bundle import ONNX_NAME, SPEC_NAME
from vadkit.edge.parity import compare_outputs
from vadkit.errors import ModelFileError, ParameterError


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


@pytest.fixture(scope="module")
def model(separated_patchcore):
    return separated_patchcore


@pytest.fixture(scope="module")
def bundle(model, tmp_path_factory):
    return export_model(model, tmp_path_factory.mktemp("edge") / "bundle")


def test_compare_outputs_matches_a_hand_computation():
    reference = compare_outputs(np.array([2.0, -4.0]), np.array([[[1.0, 0.5]], [[0.25, -2.0]]]),
                                np.array([2.1, -4.0]), np.array([[[1.0, 0.5]], [[0.75, -2.0]]]))
    assert reference["score_max_abs"] == pytest.approx(0.1)
    assert reference["score_max_rel"] == pytest.approx(0.1 / 4.0)
    assert reference["map_max_abs"] == pytest.approx(0.5)
    assert reference["map_max_rel"] == pytest.approx(0.5 / 2.0)
    with pytest.raises(ValueError, match="shapes differ"):
        compare_outputs(np.zeros(2), np.zeros((2, 1, 1)), np.zeros(3), np.zeros((3, 1, 1)))


def test_the_bundle_records_what_a_runtime_needs(model, bundle):
    spec = read_bundle(bundle)
    assert spec["method"] == "patchcore" and spec["precision"] == "fp32" and spec["input_size"] == [64, 64]
    assert spec["transform"]["image_size"] == 64 and spec["transform"]["mean"] == list(model.transform.mean)
    assert spec["threshold"] == model.threshold and spec["pixel_threshold"] == model.pixel_threshold
    assert spec["backbone_weights_sha256"] == model.backbone_weights_["sha256"]
    import onnx

    graph = onnx.load(str(bundle / ONNX_NAME)).graph
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # the batch dimension is free, not frozen at the traced 2


def test_runtime_reads_paths_pil_images_and_arrays_alike_and_labels_with_the_threshold(model, bundle, split):
    runtime = Runtime(bundle, threads=1)
    paths = [sample.image_path for sample in split.test]
    by_path = runtime.predict(paths, batch_size=3)
    reference = model.predict(paths, progress=False)
    assert [r["path"] for r in by_path] == [str(p) for p in paths]
    np.testing.assert_allclose([r["score"] for r in by_path], reference.scores, rtol=1e-4)
    assert [r["label"] for r in by_path] == list(reference.labels)
    assert {r["label"] for r in by_path} == {0, 1}
    image = Image.open(paths[-1])
    from_pil, from_array = runtime.predict(image)[0], runtime.predict(np.asarray(image.convert("RGB")))[0]
    assert from_pil["score"] == pytest.approx(by_path[-1]["score"], rel=1e-6)
    np.testing.assert_allclose(from_array["map"], by_path[-1]["map"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ParameterError, match="uint8"):
        runtime.predict(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ParameterError, match="cannot read int"):
        runtime.predict([3])
    with pytest.raises(ParameterError, match="batch_size"):
        runtime.predict(paths, batch_size=0)


def test_an_uncalibrated_export_has_no_labels(split, tmp_path):
    model = vadkit.create_model("padim", image_size=64).fit(split.train, progress=False)
    results = Runtime(export_model(model, tmp_path / "b")).predict(split.test[0].image_path)
    assert results[0]["label"] is None


def test_a_damaged_or_foreign_bundle_is_one_clear_error(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    with (copy / ONNX_NAME).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelFileError, match="does not match the SHA-256"):
        Runtime(copy)
    spec = json.loads((bundle / SPEC_NAME).read_text())
    (copy / SPEC_NAME).write_text(json.dumps({**spec, "format_version": 99}))
    with pytest.raises(ModelFileError, match="format version 99"):
        read_bundle(copy)
    (copy / SPEC_NAME).write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_bundle(copy)
    (copy / SPEC_NAME).unlink()
    with pytest.raises(ModelFileError, match="vadkit-edge.json is missing.*vadkit export"):
        Runtime(copy)


def test_the_runtime_imports_and_predicts_without_torch_faiss_or_timm(bundle, split):
    """What an edge box with onnxruntime, numpy, Pillow and `pip install --no-deps vadkit` runs: every
    library vadkit depends on otherwise is made unimportable. (CI also runs it in such a venv.)"""
    blocked = ["torch", "torchvision", "faiss", "timm", "scipy", "click", "rich", "yaml", "matplotlib"]
    script = (f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
              "from vadkit.edge import Runtime\n"
              f"r = Runtime({str(bundle)!r}).predict({str(split.test[-1].image_path)!r})[0]\n"
              "print(r['score'], r['label'], r['map'].shape)\n"
              f"assert not [m for m in sys.modules if m.split('.')[0] in {blocked!r} and sys.modules[m]]\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    score, label, shape = done.stdout.split(maxsplit=2)
    assert float(score) > 0 and label in ("0", "1") and shape.strip() == "(64, 64)"


def test_the_runtime_runs_in_a_venv_with_only_onnxruntime_numpy_pillow_and_vadkit_without_deps(bundle, split):
    """The edge box itself: `make install` builds .venv-edge (onnxruntime, numpy, Pillow, `pip install --no-deps
    -e .`); the runtime there gives the scores of the full install."""
    import os
    from pathlib import Path

    python = Path(os.environ.get("VADKIT_EDGE_VENV", Path(__file__).resolve().parents[2] / ".venv-edge")) / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"no edge venv at {python.parent.parent}: `make install` builds it")
    path = split.test[-1].image_path
    script = ("import importlib.util, sys\n"
              "assert not any(importlib.util.find_spec(m) for m in ('torch', 'faiss', 'timm', 'scipy', 'click'))\n"
              f"from vadkit.edge import Runtime\nprint(Runtime({str(bundle)!r}).predict({str(path)!r})[0]['score'])\n")
    done = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == pytest.approx(Runtime(bundle).predict(path)[0]["score"], rel=1e-6)


def test_check_parity_reports_within_tolerance_for_the_fp32_export(model, bundle, split):
    report = check_parity(model, bundle, [s.image_path for s in split.test], batch_size=5)
    assert report["within_tolerance"] and report["labels_agree"] == 1.0 and report["n_images"] == 8
    assert report["score_max_rel"] <= 1e-4 and report["map_max_rel"] <= 1e-4


def test_int8_quantisation_writes_a_smaller_bundle_that_still_ranks_images(model, bundle, split, tmp_path):
    calibration = [s.image_path for s in split.train]
    int8 = quantize_bundle(bundle, tmp_path / "int8", calibration)
    spec = read_bundle(int8)
    assert spec["precision"] == "int8" and spec["quantization"]["calibration_images"] == 12
    assert spec["quantization"]["fp32_onnx_sha256"] == read_bundle(bundle)["onnx_sha256"]
    assert spec["quantization"]["calibration"] == "percentile" and spec["quantization"]["kept_float"] == 2
    assert spec["threshold"] == model.threshold
    assert (int8 / ONNX_NAME).stat().st_size < (bundle / ONNX_NAME).stat().st_size
    paths = [s.image_path for s in split.test]
    int8_scores = np.array([r["score"] for r in Runtime(int8).predict(paths)])
    labels = np.array([s.label for s in split.test])
    # the planted defects still score above every normal image
    assert int8_scores[labels == 1].min() > int8_scores[labels == 0].max()
    with pytest.raises(ParameterError, match="already int8"):
        quantize_bundle(int8, tmp_path / "again", calibration)
    with pytest.raises(ParameterError, match="calibration images"):
        quantize_bundle(bundle, tmp_path / "none", [])
    with pytest.raises(ParameterError, match="unknown calibration method"):
        quantize_bundle(bundle, tmp_path / "x", calibration, method="magic")


def test_the_map_smoothing_convolutions_stay_float_and_only_they(bundle):
    import onnx

    from vadkit.edge.quantize import map_smoothing_convs

    graph = onnx.load(str(bundle / ONNX_NAME)).graph
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    convs = {node.name: weights.get(node.input[1]) for node in graph.node if node.op_type == "Conv"}
    kept = map_smoothing_convs(bundle / ONNX_NAME)
    # the separable Gaussian: a 1 x k and a k x 1 kernel on one channel; every backbone conv has more channels
    assert sorted(convs[name][2:] for name in kept) == sorted([(1, convs[kept[0]][3]), (convs[kept[0]][3], 1)])
    assert all(shape[:2] != (1, 1) for name, shape in convs.items() if name not in kept)


def test_export_command_writes_checks_and_quantises(model, split, mvtec_folder, tmp_path):
    from vadkit.cli import main

    model_path = model.save(tmp_path / "model.vad")
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["export", str(model_path), "--out", str(out), "--check",
                                       str(mvtec_folder / "test"), "--check-images", "4", "--int8",
                                       str(mvtec_folder / "train"), "--int8-images", "5", "--int8-calibration",
                                       "minmax", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "patchcore as one ONNX graph" in result.output and "fp32 parity on 4 images" in result.output
    assert "within 0.0001" in result.output and "int8 parity on 4 images" in result.output
    assert read_bundle(out)["source_model"]["path"] == str(model_path)
    assert read_bundle(out / "int8")["precision"] == "int8"
    assert read_bundle(out / "int8")["quantization"]["calibration"] == "minmax"
    assert read_bundle(out / "int8")["quantization"]["calibration_images"] == 5
    assert "minmax calibration on 5 images" in result.output
    missing = CliRunner().invoke(main, ["export", str(tmp_path / "nope.vad"), "--out", str(out)])
    assert missing.exit_code == 2 and "model file not found" in missing.output


def test_a_rectangular_fit_model_exports_and_the_runtime_cuts_the_padding_away_as_vadkit_does(split, tmp_path):
    """The runtime reads the resize mode from the bundle and returns maps on the evaluation grid, equal to the
    model's own predictions (the generated images are square, the input wide: a third of it is padding)."""
    model = vadkit.create_model("patchcore", image_size="64x128", resize="fit").fit(split.train, progress=False)
    bundle = export_model(model, tmp_path / "wide")
    assert read_bundle(bundle)["transform"]["resize"] == "fit"
    assert read_bundle(bundle)["input_size"] == [64, 128]
    paths = [s.image_path for s in split.test[:4]]
    expected = model.predict(paths, progress=False)
    results = Runtime(bundle).predict(paths)
    np.testing.assert_allclose([r["score"] for r in results], expected.scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.stack([r["map"] for r in results]), expected.maps, rtol=1e-4, atol=1e-4)
