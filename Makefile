# tinylm: every target creates the virtual environment and installs first.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed

.PHONY: venv pipeline test book book-check lab lab-check clean

venv: $(STAMP)

# torch is pinned here (a CPU wheel); pyproject keeps a range so other installs stay free.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test,book]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

pipeline: venv
	.venv/bin/tinylm pipeline --preset default --output-dir runs/default

# The book's run: the quick preset's pipeline, whose executed chapters `make book` renders.
BOOK_RUN := $(CURDIR)/_build/book-run

# Every chapter runs once here, through the pipeline (tests/integration/test_pipeline.py), in
# $(BOOK_RUN), emptied first: `make book` then finds them executed with these sources and
# renders them without running them again. (`pytest` alone runs them in a temporary folder.)
# One worker process per core, each taking whole test files (a file's shared runs are made
# once); much of the suite starts processes and imports torch, one core's work at a time.
test: venv
	TINYLM_PIPELINE_TEST_DIR=$(BOOK_RUN) $(PY) -m pytest -n auto --dist loadfile tests

# The chapters of $(BOOK_RUN) that are missing or out of date are executed (all of them the
# first time), then the book renders them strictly; a failing cell fails the build.
book: venv
	$(PY) -m tinylm.book_build --run-dir $(BOOK_RUN) --source-dir _build/book-src
	.venv/bin/jupyter-book build -W -n --keep-going --path-output . _build/book-src

# The built book in headless Chromium (the system's: apt-get install -y chromium): math
# rendered, images loaded, internal links and anchors found, no table or code wider than the page,
# every chapter with internal links and hide-input toggles (counted per chapter).
book-check: venv
	$(PY) tests/book_check.py _build/html

# JupyterLab on the chapters. Its kernels' OpenMP threads sleep when idle, as the pipeline's do
# (spinning ones make a loop of small steps crawl whenever anything else runs); as root (a
# container, CI) Jupyter needs --allow-root. LAB_DIR and LAB_ARGS are for `make lab-check`.
LAB_DIR ?= book/
LAB_ARGS ?=
lab: venv
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} .venv/bin/jupyter lab \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) $(LAB_DIR)

# One chapter run in JupyterLab, started by `make lab`, in headless Chromium (the system's): not
# shown as modified on open, its MyST dropdowns rendered, Run All without an error or a warning.
lab-check: venv
	$(PY) tests/lab_check.py

clean:
	rm -rf _build .pytest_cache runs/book
