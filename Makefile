# Everything the project needs is installed by these targets into .venv; nothing is assumed on the machine.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# torch 2.14.1 + torchvision 0.29.1: PyPI's torchvision does not import beside the CPU-only torch 2.13.0 wheel,
# and Transformers' video processors need torchvision.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet $(TORCH)
	$(PYTHON) -m pip install --quiet -e ".[dev,demo,avs,bench]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vidcomp demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest
