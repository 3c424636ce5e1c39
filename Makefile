# sam2grasp — fresh machine: `make demo` runs the main job, `make test` passes the tests.
PY := .venv/bin/python
STAMP := .venv/.installed
export MUJOCO_GL ?= egl
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo test test-fast bench lint serve

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline.cli demo "pick the red cube" --out out/demo.mp4

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/sim.py
	$(PY) bench/grounding.py
	$(PY) bench/drivers.py
	$(PY) bench/faults.py

serve: $(STAMP)
	$(PY) -m pipeline.cli serve

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
