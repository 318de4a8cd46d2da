# The two quick-start commands: `make demo` and `make test`. Each installs what it needs into .venv.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REF    ?= reference
WEIGHTS ?= weights
TEST_WORKERS ?= 2
# tcmalloc where the system has it (Debian's libtcmalloc-minimal4; .ci/run installs it): glibc gives
# large freed blocks back to the kernel and faults them in again on the next pass, a third of
# verify's time at 512 channels (docs/verification.md). Nothing numerical depends on it.
# `make test TCMALLOC=` runs without it.
TCMALLOC ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
	/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4))
RUN    := $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC)) $(PY)

.PHONY: install demo test clean tcmalloc-path

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Build a reference release, convert it, verify it, print the report; then AttFind in PyTorch,
# compared with the release's examples_1.tfrecord (computed by the TF backend).
demo: install
	$(RUN) cli.py make-reference --out $(REF)
	$(RUN) cli.py convert --tf-ckpt $(REF) --out $(WEIGHTS)/$(REF)
	$(RUN) cli.py verify --tf-ckpt $(REF) --weights $(WEIGHTS)/$(REF) --json $(WEIGHTS)/$(REF)/verify.json
	$(RUN) cli.py attfind --weights $(WEIGHTS)/$(REF) --dlatents $(REF)/dlatents.pkl --out runs/attfind/$(REF) --sufficiency

# Two pytest-xdist workers of one thread each (parity_tests/conftest.py); TEST_WORKERS=0 runs serially.
test: install
	$(RUN) -m pytest parity_tests/ -q -n $(TEST_WORKERS) --dist loadgroup

clean:
	rm -rf $(REF) $(WEIGHTS)/$(REF) runs .pytest_cache

# The library make test and make demo preload (empty: none found); .ci/run asks here.
tcmalloc-path:
	@echo $(TCMALLOC)
