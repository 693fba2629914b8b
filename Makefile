# The two entry points (see README): `make demo` and `make test`. Each sets up .venv first.
.PHONY: demo test test-fast setup setup-test clean

demo: setup
	.venv/bin/hybridnets demo

test: setup-test
	.venv/bin/python -m pytest

# The developer loop: everything but the DDS graph and subprocess tests (marked slow).
test-fast: setup-test
	.venv/bin/python -m pytest -m "not slow"

setup:
	@bash scripts/bootstrap.sh

setup-test:
	@bash scripts/bootstrap.sh --test

clean:
	rm -rf .venv build out .pytest_cache
