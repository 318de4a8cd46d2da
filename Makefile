# The two quick-start commands: `make demo` and `make test`. Each installs what it needs into .venv.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REF    ?= reference
WEIGHTS ?= weights
TEST_WORKERS ?= 2

.PHONY: install demo test clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Build a reference release, convert it, verify it, print the report; then AttFind in PyTorch,
# compared with the release's examples_1.tfrecord (computed by the TF backend).
demo: install
	$(PY) cli.py make-reference --out $(REF)
	$(PY) cli.py convert --tf-ckpt $(REF) --out $(WEIGHTS)/$(REF)
	$(PY) cli.py verify --tf-ckpt $(REF) --weights $(WEIGHTS)/$(REF) --json $(WEIGHTS)/$(REF)/verify.json
	$(PY) cli.py attfind --weights $(WEIGHTS)/$(REF) --dlatents $(REF)/dlatents.pkl --out runs/attfind/$(REF) --sufficiency

# Two pytest-xdist workers of one thread each (parity_tests/conftest.py); TEST_WORKERS=0 runs serially.
test: install
	$(PY) -m pytest parity_tests/ -q -n $(TEST_WORKERS) --dist loadgroup

clean:
	rm -rf $(REF) $(WEIGHTS)/$(REF) runs .pytest_cache
