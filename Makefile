# The two entry points (see README): `make demo` and `make test`. Each sets up .venv first.
.PHONY: demo test test-fast setup setup-test clean

demo: setup
	.venv/bin/hybridnets demo

# Two test processes, one file each at a time (pytest-xdist): much of the suite waits on
# DDS, subprocesses and sockets, and the two share one cache of exports and engines.
test: setup-test
	.venv/bin/python -m pytest -n 2 --dist loadfile

# The developer loop: everything but the DDS graph and subprocess tests (marked slow).
test-fast: setup-test
	.venv/bin/python -m pytest -m "not slow"

setup:
	@bash scripts/bootstrap.sh

setup-test:
	@bash scripts/bootstrap.sh --test

clean:
	rm -rf .venv build out .pytest_cache
