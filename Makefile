# Two ways in: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fetaliqa-installed

# Text files are UTF-8 whatever the machine's locale (CI may run with none set).
export PYTHONUTF8 := 1

.PHONY: install demo test clean-venv

$(STAMP): pyproject.toml Makefile
	@echo "Installing FetalIQA into $(VENV) (the first time only: about 3 minutes and 6.4 GB, PyTorch included)..."
	@test -x $(PY) || $(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else "FetalIQA needs Python 3.11 or 3.12; $(PYTHON) is " + sys.version.split()[0] + ": install python3.11 or run make PYTHON=/path/to/python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=23"
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Opens the app on the demo sweep with the demo model. Without a display it renders
# offscreen, writes the scores and a screenshot, and prints where they are.
demo: install
	$(PY) -m fetaliqa_core.cli demo

test: install
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
