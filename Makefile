# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean bench peer-env

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,cluster]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/her2sim demo --out demo_out

# pytest exits 5 when it collects no test: reported and treated as a failure
test: $(STAMP)
	NUMBA_CACHE_DIR=$(CURDIR)/.numba_cache $(BIN)/python -m pytest -q -n 2 --dist loadfile; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/mc_validation.py --json
	$(BIN)/python bench/mc_throughput.py --json
	$(BIN)/python bench/recon_peer_config.py --json
	$(BIN)/python bench/pvc_accuracy.py --json
	$(BIN)/python bench/quantitation_budget.py --json
	$(BIN)/python bench/threshold_by_scatter.py --json
	$(BIN)/python bench/phantom_realism.py --json
	$(BIN)/python bench/whole_body.py --json

# optional: PyTomography peer for bench/recon_peer_config.py (separate venv, about 1 min)
peer-env: .venv-peer/.installed
.venv-peer/.installed: bench/peer-requirements.txt
	test -x .venv-peer/bin/python || $(PY) -m venv .venv-peer
	.venv-peer/bin/python -m pip install -q -r bench/peer-requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .venv-peer .numba_cache demo_out
