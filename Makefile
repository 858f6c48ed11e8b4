# The two commands of the README. Both set the machine up first (idempotent).
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup repro test bench
setup:
	bash scripts/setup.sh

repro: setup       ## the whole pipeline on the embedded default (Fashion-MNIST, NAS-Bench-201 space)
	dvc repro      # torch's threads come from params.yaml (threads: 1), as in README's measured table

test: setup        ## the test suite, the end-to-end pipeline on a tiny configuration included
	python -m pytest -q -n auto --dist loadfile  # one worker per core; a file's tests share a worker (module fixtures)
