# Two entry points for a fresh machine: `make demo` and `make test`.
# tools/setup_env.sh: the heavy part (torch + CUDA wheels, ~5 GB) is created once per lock-file hash under
# $(SSL_EQ_ENV_ROOT) (default ~/.cache/ssl_eq) and shared by every clone and CI run; each checkout gets its own
# thin .venv over it with its own editable install (a second clone never re-points this one's `ssl-eq`).
SHELL := /bin/bash
.DEFAULT_GOAL := help

DEMO_OUT ?= demo_out

.PHONY: help env demo test bench-render clean

help:
	@echo "make demo   - set up the environment and run the demo (render -> pretrain -> probe -> report)"
	@echo "make test   - set up the environment and run the test suite (CPU)"
	@echo "make env    - only set up the environment (prints this checkout's venv path)"

env:
	@bash tools/setup_env.sh

demo:
	@V=$$(bash tools/setup_env.sh) && $$V/bin/ssl-eq demo --out $(DEMO_OUT)

test:
	@V=$$(bash tools/setup_env.sh) && $$V/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench-render:
	@V=$$(bash tools/setup_env.sh) && $$V/bin/python tools/bench_render.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .venv .venv.lock
