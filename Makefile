# The two entry points (see README): `make demo` and `make test`. Each sets up .venv first.
.PHONY: demo test setup setup-test clean

demo: setup
	.venv/bin/hybridnets demo

test: setup-test
	.venv/bin/python -m pytest

setup:
	@bash scripts/bootstrap.sh

setup-test:
	@bash scripts/bootstrap.sh --test

clean:
	rm -rf .venv build out .pytest_cache
