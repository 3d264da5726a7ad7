# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.rnnlab-installed

.PHONY: install demo test test-fast bench clean

KERNELS := $(VENV)/.rnnlab-kernels
CATALOGS := $(VENV)/share/rnnlab/catalogs
MODELS := $(VENV)/share/rnnlab/models

install: $(STAMP) $(KERNELS) $(CATALOGS)/.installed $(MODELS)/speech_embedding.safetensors

# torch is pinned and installed first so no other package can pull a (multi-GB CUDA) torch.
$(STAMP): pyproject.toml scripts/install-debian.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[apps,test,bench]" torch==2.13.0
	bash scripts/install-debian.sh
	touch $(STAMP)

# rnnlab's C++ scan kernels (impl="fused"), compiled once here, never at import; without them the
# fused layers fall back to torch's own kernels (same numbers, slower).
$(KERNELS): $(STAMP) src/rnnlab/csrc/scan.cpp src/rnnlab/build_kernels.py
	$(PY) -m rnnlab.build_kernels || echo "rnnlab: C++ kernels not built (no compiler?); fused layers use torch's kernels"
	touch $(KERNELS)

# More human translations for `rnnlab translate` to train on: the .po files of seven pinned PyPI wheels
# (rnnlab.data.translation.EXTRA_CATALOGS), downloaded without installing them. Without them
# translate trains on the four packages' catalogs alone, and says so.
$(CATALOGS)/.installed: $(STAMP) src/rnnlab/data/translation.py
	$(PY) -m rnnlab.data.translation install-catalogs $(CATALOGS) && touch $@ \
	  || echo "rnnlab: extra translation catalogs not downloaded; translate trains on the four packages only"

# The speech models' front end: Google's speech embedding, taken out of the pinned openWakeWord wheel
# (downloaded, not installed) and converted to safetensors (rnnlab.data.speech_embedding).
$(MODELS)/speech_embedding.safetensors: $(STAMP) src/rnnlab/data/speech_embedding.py
	$(PY) -m rnnlab.data.speech_embedding install $(MODELS)

demo: install
	$(PY) -m rnnlab demo --run-dir runs/demo

test: install
	$(PY) -m pytest -n 2 --durations=15

bench: install
	$(PY) -m rnnlab bench

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis build src/*.egg-info src/rnnlab/_scan_ext*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
