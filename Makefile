# The two commands a fresh machine needs: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: serve test install install-test

install:
	scripts/bootstrap.sh

install-test:
	scripts/bootstrap.sh --test

serve: install
	$(VENV)/bin/firebox serve $(ARGS)

test: install-test
	scripts/test.sh
