# Two entry points for a fresh machine: `make demo` and `make test`.
# The environment (torch + CUDA wheels, ~5 GB) is created once per lock-file hash under
# $(SSL_EQ_ENV_ROOT) (default ~/.cache/ssl_eq) and reused by every clone and CI run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

DEMO_OUT ?= demo_out

.PHONY: help env demo test bench-render clean

help:
	@echo "make demo   - set up the environment and run the demo (render -> pretrain -> probe -> report)"
	@echo "make test   - set up the environment and run the test suite (CPU)"
	@echo "make env    - only set up the environment (prints its path)"

env:
	@bash tools/setup_env.sh

demo:
	@V=$$(bash tools/setup_env.sh) && $$V/bin/ssl-eq demo --out $(DEMO_OUT)

test:
	@V=$$(bash tools/setup_env.sh) && $$V/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench-render:
	@V=$$(bash tools/setup_env.sh) && $$V/bin/python tools/bench_render.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
