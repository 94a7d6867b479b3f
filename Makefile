# Everything a reader or CI needs. `make test` and `make book` install what they use first.
PY ?= python3
PIP := $(PY) -m pip
NBVAL := $(PY) -m pytest --nbval notebooks --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --ignore=_build
STAMP := .make/installed

.PHONY: install test unit nbval lint book book-only notebooks bench clean

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PIP) install -q -r requirements-dev.txt -c constraints.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	mkdir -p .make && touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check alexnet_lib tests bench

unit: $(STAMP)
	$(PY) -m pytest tests -q

# The notebooks in QUICK mode (short training) against their stored full-run outputs.
nbval: $(STAMP)
	ALEXNET_QUICK=1 $(NBVAL) -q

# The whole suite: what .ci/run calls.
test: lint unit nbval

book: $(STAMP)
	$(PY) -m jupyter_book build . -W -n --keep-going

# Re-execute every chapter in full mode and store its outputs (slow: see each chapter's header).
notebooks: $(STAMP)
	cd notebooks && for nb in [0-9]*.ipynb; do \
	  $(PY) -m jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=3600 --ExecutePreprocessor.store_widget_state=True $$nb || exit 1; done

clean:
	rm -rf _build .make
