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

.PHONY: install demo test clean tcmalloc-path digits

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

# The digits run of docs/training.md: scikit-learn's 8s and 9s as a folder, a classifier, StylEx
# trained once (a second `make digits` resumes or reuses the checkpoint), then AttFind, flip rates
# and the user study on the trained model. DIGITS_STEPS=... trains longer.
DIGITS ?= runs/digits
DIGITS_STEPS ?= 8000
DIGITS_TRAIN ?= --channel-max 32 --z-dim 32 --mapping-layers 2 --rec-image 10 --classifier-kl 0.1
DIGITS_THREADS ?= 0   # torch threads of the two training commands (0: every core); 1 beside another job
digits: install
	test -d data/digits89 || $(RUN) examples/digits_folder.py --out data/digits89
	test -f $(DIGITS)/classifier/manifest.json || $(RUN) cli.py train-classifier --data data/digits89 --out $(DIGITS)/classifier \
		--threads $(DIGITS_THREADS)
	$(RUN) cli.py train --data data/digits89 --classifier $(DIGITS)/classifier --out $(DIGITS)/stylex \
		--steps $(DIGITS_STEPS) --threads $(DIGITS_THREADS) $(DIGITS_TRAIN) $(if $(wildcard $(DIGITS)/stylex/checkpoint.pt),--resume)
	$(RUN) cli.py attfind --weights $(DIGITS)/stylex/weights --dlatents $(DIGITS)/stylex/dlatents.pkl \
		--out $(DIGITS)/attfind --num-indices 8 --top 4 --examples 4
	$(RUN) cli.py flip-rate --weights $(DIGITS)/stylex/weights --dlatents $(DIGITS)/stylex/dlatents.pkl \
		--attfind-out $(DIGITS)/attfind --out $(DIGITS)/flip_rate --k 10
	$(RUN) cli.py user-study --attfind-out $(DIGITS)/attfind --out $(DIGITS)/user_study

# Two pytest-xdist workers of one thread each (parity_tests/conftest.py); TEST_WORKERS=0 runs serially.
test: install
	$(RUN) -m pytest parity_tests/ -q -n $(TEST_WORKERS) --dist loadgroup

clean:
	rm -rf $(REF) $(WEIGHTS)/$(REF) runs .pytest_cache

# The library make test and make demo preload (empty: none found); .ci/run asks here.
tcmalloc-path:
	@echo $(TCMALLOC)
