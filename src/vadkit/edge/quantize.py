"""int8 bundles: onnxruntime static quantisation, calibrated on normal images.

The activations' ranges are measured by running the fp32 bundle on calibration images (normal parts, e.g. the
training or validation folder: the ranges a deployed model will see), then the convolutions' weights are
quantised per output channel and their inputs per tensor, as QuantizeLinear/DequantizeLinear pairs around
them (the QDQ format onnxruntime fuses into int8 kernels), activations and weights both signed (S8S8). Only convolutions are quantised by default: they
are the backbone's (and students') whole cost, whereas the memory-bank search, the flows' exponentials and
the map post-processing need float range (a distance of two int8 vectors loses the small differences an
anomaly score is made of). Nor are the single-channel convolutions of the map post-processing (the separable
Gaussian smoothing): their inputs are the anomaly maps themselves, and 256 levels over a map's range flattened
it (measured: PatchCore on battery_weld, pixel AUROC 0.924 fp32 -> 0.500 with them quantised). Accuracy, size and latency against fp32 are measured in
``benchmarks/bench_export.py`` (BENCHMARKS.md): on an AVX2 CPU without VNNI int8 is smaller but not faster, and
its scores move by a large fraction of their scale, so the fp32 thresholds the bundle carries are only a starting
point: recalibrate them on the int8 bundle's scores of labelled images.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vadkit.edge.bundle import ONNX_NAME, read_bundle, write_spec
from vadkit.errors import ParameterError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def quantize_bundle(bundle: str | Path, out: str | Path, calibration_images: Sequence[str | Path], *,
                    op_types: Sequence[str] = ("Conv",), per_channel: bool = True, method: str = "percentile",
                    batch_size: int = 1) -> Path:
    """Write an int8 copy of the fp32 ``bundle`` to ``out`` (a bundle again, ``precision: int8``); returns ``out``.

    ``calibration_images``: paths of normal images (at least one). ``op_types``: the ONNX operators to quantise.
    ``method``: how activation ranges are chosen from the calibration outputs (onnxruntime's MinMax, Entropy or
    Percentile calibrators). Percentile (the 99.999th of each activation's histogram) is the default: a min-max
    range is stretched by rare outliers and leaves too few levels for the small feature differences an anomaly
    score measures (measured: PatchCore on battery_weld, image / pixel AUROC 0.967 / 0.924 fp32, 0.846 / 0.635
    min-max, 0.968 / 0.812 percentile); it costs about twice the calibration time. ``batch_size``: images per calibration run; the histogram calibrators (entropy,
    percentile) need every run's outputs of one shape, which a last partial batch breaks, so 1 unless the number
    of images is a multiple of it.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vadkit.edge.runtime import Runtime

    if method not in CALIBRATION_METHODS:
        raise ParameterError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    paths = [Path(p) for p in calibration_images]
    if not paths:
        raise ParameterError("int8 quantisation needs calibration images (a folder of normal images)")
    bundle, out = Path(bundle), Path(out)
    spec = read_bundle(bundle)
    if spec.get("precision") != "fp32":
        raise ParameterError(f"{bundle} is already {spec.get('precision')}; quantise the fp32 export")
    fp32_sha256 = spec["onnx_sha256"]
    runtime = Runtime(bundle)

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
            self.batches = iter([np.stack([runtime.preprocess(p) for p in chunk]) for chunk in chunks])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {runtime.input_name: batch}

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(bundle / ONNX_NAME), str(prepared), skip_symbolic_shape=True)
        excluded = map_smoothing_convs(prepared)
        quantize_static(str(prepared), str(out / ONNX_NAME), Images(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), per_channel=per_channel, nodes_to_exclude=excluded,
                        # signed activations: x86 CPUs without VNNI saturate the u8 x s8 products onnxruntime
                        # uses for uint8 activations (measured: PatchCore image AUROC 0.998 fp32 -> 0.586 with
                        # uint8, 0.949 with int8 activations, mvtec_bottle, AVX2-only EPYC)
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                          "percentile": CalibrationMethod.Percentile}[method])
    spec = {key: value for key, value in spec.items() if key not in ("format", "format_version", "onnx_sha256")}
    spec.update(precision="int8", quantization={
        "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "op_types": list(op_types),
        "per_channel": per_channel, "activations": "int8", "weights": "int8", "calibration": method,
        "calibration_images": len(paths), "kept_float": len(excluded), "fp32_onnx_sha256": fp32_sha256})
    write_spec(out, spec)
    return out


def map_smoothing_convs(onnx_path: str | Path) -> list[str]:
    """Names of the convolutions that smooth anomaly maps: one input and one output channel (a backbone's or
    student's convolutions have three or more channels, depthwise ones included). They stay in float."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [node.name for node in graph.node
            if node.op_type == "Conv" and len(node.input) > 1 and shapes.get(node.input[1], (0, 0))[:2] == (1, 1)]
