# Two ways in: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fetaliqa-installed

# Text files are UTF-8 whatever the machine's locale (CI may run with none set).
export PYTHONUTF8 := 1
# Under the C locale Python reads the install's path file (.pth) as ASCII: a clone whose path has
# other letters (".../Échographie/FetalIQA") failed to install, and an installed .venv could not
# start. The targets run under C.UTF-8 there (Linux has it); the locale of any other name is kept.
ifeq ($(shell uname -s),Linux)
ifneq ($(filter C POSIX,$(or $(LC_ALL),$(LC_CTYPE),$(LANG),C)),)
export LC_ALL := C.UTF-8
endif
endif

.PHONY: install demo test clean-venv

# One install at a time into $(VENV) (a second `make` started meanwhile waits for it: two pips
# into one environment can break it); an environment left without pip by an install stopped part
# way (Ctrl-C while it was made) is made again (every later run failed: "No module named pip").
$(STAMP): pyproject.toml Makefile
	@echo "Installing FetalIQA into $(VENV) (the first time only: about 3 minutes and 6.4 GB, PyTorch included)..."
	@exec 9>"$(VENV).lock"; \
	if command -v flock >/dev/null 2>&1 && ! flock -n 9; then \
	  echo "Another install into $(VENV) is running (make started twice?): waiting for it to finish..."; \
	  flock 9; \
	  if [ "$(STAMP)" -nt pyproject.toml ] && [ "$(STAMP)" -nt Makefile ]; then exit 0; fi; \
	fi; \
	set -e; \
	if ! "$(PY)" -m pip --version >/dev/null 2>&1; then \
	  $(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else "FetalIQA needs Python 3.11 or 3.12; $(PYTHON) is " + sys.version.split()[0] + ": install python3.11 or run make PYTHON=/path/to/python3.11")'; \
	  if [ -e "$(PY)" ]; then echo "$(VENV) is incomplete (an install was stopped part way): making it again"; fi; \
	  echo "$(PYTHON) -m venv --clear $(VENV)"; $(PYTHON) -m venv --clear $(VENV); \
	fi; \
	echo "$(PY) -m pip install ..."; \
	$(PY) -m pip install --upgrade --quiet "pip>=23"; \
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1; \
	$(PY) -m pip install --quiet -e '.[test]'; \
	touch $(STAMP)

install: $(STAMP)

# Opens the app on the demo sweep with the demo model. Without a display it renders
# offscreen, writes the scores and a screenshot, and prints where they are.
demo: install
	$(PY) -m fetaliqa_core.cli demo

test: install
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV) $(VENV).lock
