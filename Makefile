# The two README commands. Each creates .venv if it is missing and installs everything first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.defectlab-installed
export HF_HUB_OFFLINE := 1
export YOLO_OFFLINE := true
export MPLBACKEND := Agg

# CI runs the slow tests too.
PYTEST_MARKERS := $(if $(filter true,$(CI)),-m "slow or not slow",)

.PHONY: test demo install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,yolo]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_MARKERS)

demo: $(STAMP)
	$(VENV)/bin/defectlab demo
