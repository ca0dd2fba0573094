# Two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/dagster_home
export COSMOS_PROJECT_ROOT ?= $(CURDIR)
DEMO_SHOT := sample_flythrough
DEMO_PROMPT := sample_flythrough_demo
UI_PORT ?= 3000

.PHONY: demo test lint ui bench venv system-deps clean-demo

$(VENV)/.installed: pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 is needed: apt-get install -y python3 python3-venv"; exit 1; }
	python3 -m venv $(VENV) || { bash .ci/install-system-deps.sh --python-only && python3 -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	bash .ci/install-system-deps.sh

## The sample render through all five assets on the preview backend (no GPU, a preview of the pipeline).
demo: venv
	$(BIN)/cosmos-assets demo-setup
	$(BIN)/dagster asset materialize -m cosmos_assets.definitions --select shots,control_videos --partition $(DEMO_SHOT)
	$(BIN)/dagster asset materialize -m cosmos_assets.definitions --select prompt_inputs,prompt_specs,generated_videos,upscaled_videos --partition $(DEMO_PROMPT)
	@echo
	@echo "Done (preview backend: a preview of the pipeline, not the Cosmos model)."
	@echo "  control videos: $(COSMOS_PROJECT_ROOT)/inputs/videos/$(DEMO_SHOT)/"
	@echo "  generated:      $(COSMOS_PROJECT_ROOT)/outputs/$(DEMO_PROMPT)/output.mp4"
	@echo "  4K upscale:     $(COSMOS_PROJECT_ROOT)/outputs/$(DEMO_PROMPT)_upscaled/output.mp4"
	@echo "  run history:    $(COSMOS_PROJECT_ROOT)/notes/run_history.log"
	@echo "Open the UI with: make ui   (then http://127.0.0.1:$(UI_PORT))"

## The formatter and the linter (ruff, configured in pyproject.toml): `make test` runs them first. To fix what the
## formatter reports: .venv/bin/ruff format cosmos_assets tests bench
lint: venv
	$(BIN)/ruff format --check cosmos_assets tests bench
	$(BIN)/ruff check cosmos_assets tests bench

## The whole test suite, with the real sshd, dockerd and Chromium it needs (after the lint).
test: venv lint system-deps
	$(PY) -m pytest -q -p no:cacheprovider

## The Dagster UI for this project on 127.0.0.1.
ui: venv
	@echo "Dagster UI: http://127.0.0.1:$(UI_PORT)  (DAGSTER_HOME=$(DAGSTER_HOME))"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

bench: venv system-deps
	$(PY) -m bench

clean-demo:
	rm -rf art/houdini/renders/$(DEMO_SHOT) inputs outputs notes .preview_host
