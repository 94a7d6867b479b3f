# Everything a reader or CI needs. `make test` and `make book` install what they use first.
PY ?= python3
PIP := $(PY) -m pip
NBVAL := $(PY) -m pytest --nbval notebooks --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --ignore=_build
STAMP := .make/installed
# jupyter-book 1.x has no `python -m jupyter_book`: call its command-line entry point.
JB := $(PY) -c "import sys; from jupyter_book.cli.main import main; sys.exit(main())"

.PHONY: install test unit nbval lint colab browser vendor book book-only notebooks bench clean

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PIP) install -q -r requirements-dev.txt -c constraints.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	mkdir -p .make && touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check alexnet_lib tests bench tools book/_ext

# Two pytest-xdist workers: many tests wait on subprocesses and file I/O, so two workers on two cores
# finish sooner than one (93-111 s against 134 s when the suite was measured so, with fewer tests; 163 s
# for the 560 tests of CI's run on 2026-12-06).
unit: $(STAMP)
	$(PY) -m pytest tests -q -n 2 -m "not slow" --ignore=tests/test_browser.py --ignore=tests/test_book.py

# The notebooks in QUICK mode (short training) against their stored full-run outputs: two notebooks at a
# time (pytest-xdist, all cells of a notebook in one worker), one torch thread each. On 2 cores this took
# 86 s where one notebook at a time with 2 threads took 132-151 s (two workers with 2 threads each, 4 min:
# waiting OpenMP threads spin and take the core from the thread they wait for).
nbval: $(STAMP)
	OMP_NUM_THREADS=1 ALEXNET_QUICK=1 $(NBVAL) -q -n 2 --dist loadfile

# The Colab bootstrap cell, run as on Colab in a fresh virtual environment (1-3 minutes).
colab: $(STAMP)
	$(PY) -m pytest tests/test_colab_bootstrap.py -q -m slow

# The built book has every page and figure; every page in headless Chromium, offline (Debian: apt-get install chromium);
# screenshots and a report go to test-artifacts/.
BROWSER_TESTS = BOOK_HTML=_build/html $(PY) -m pytest tests/test_book.py tests/test_browser.py -q
browser: book
	$(BROWSER_TESTS)

# The whole suite: what .ci/run calls. The Colab test (mostly pip and file copies) and the book build
# (one Sphinx process) each leave a core idle, so they run side by side; the tests that use both cores
# (unit, nbval) run alone.
test: lint unit nbval
	$(MAKE) -j2 --output-sync=target colab book
	$(BROWSER_TESTS)

# MathJax, RequireJS and the ipywidgets HTML manager, pinned, from the npm registry into _vendor/ (the
# book serves them itself; without them it falls back to CDNs and says so).
vendor:
	$(PY) tools/vendor_assets.py

book: $(STAMP) vendor
	$(JB) build . -W -n --keep-going

# Re-execute every chapter in full mode and store its outputs (slow: see each chapter's header).
notebooks: $(STAMP)
	$(PY) tools/run_notebooks.py

# Speed: training images/s of the tutorial loop vs fit (ratio, MFU), the ladder of each step (with the
# rungs under torch.compile), the fast recipe's time to 90% on Fashion-MNIST (3 seeds), the stretch
# recipe's to 93% (3 seeds). About 30 minutes on 2 CPU cores (on the EPYC of bench/results/: the ladder
# 14, the stretch recipe's runs 11); the results go to bench/results/ (committed) and README.md's speed
# section is rewritten from them. The time-to-accuracy commands exit 1 when a seed misses its target ("-": the README is
# still rewritten, and says so).
bench: $(STAMP)
	$(PY) -m bench.throughput --ladder --compile --json bench/results/throughput.json
	-$(PY) -m bench.time_to_accuracy --seeds 0 1 2 --json bench/results/time_to_accuracy.json
	-$(PY) -m bench.time_to_accuracy --recipe stretch --seeds 0 1 2 --json bench/results/time_to_accuracy_stretch.json
	$(PY) tools/readme_bench.py

clean:
	rm -rf _build .make _vendor test-artifacts
