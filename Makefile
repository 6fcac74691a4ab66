# Two entry points for a fresh machine (README.md): `make book` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= toy
DATA    ?=
WORKERS ?= 2
# Where the units run: empty (local processes), local, tcp://host:8786 or a cluster file (nand sweep --help).
CLUSTER ?=
# A checkout keeps what nandlib generates (datasets, toy weights, feature cache) beside it.
export NAND_HOME ?= $(CURDIR)/.nand

.PHONY: install test lint book clean colab-sync check-book

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[book,test,tgvig,cluster]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check nandlib tests benchmarks notebooks book

# Every test that needs neither a GPU nor the internet, slow ones included (golden frames, the installed
# wheel, the end-to-end toy world); a bare `pytest` skips the slow ones for a quick loop.
test: install lint
	$(PY) -m pytest -q -m "not gpu and not network"

clean:
	rm -rf _build book/generated

book: install colab-sync
	$(VENV)/bin/nand book --profile $(PROFILE) $(if $(DATA),--data $(DATA)) --workers $(WORKERS) $(if $(CLUSTER),--cluster $(CLUSTER))
	@test -f _build/html/index.html && echo "open _build/html/index.html"

# The Colab install cells (book/try_your_normality.ipynb, notebooks/run_class.ipynb) from _config.yml's
# repository.url and branch: run after changing them (a fork), then commit the notebooks.
colab-sync: install
	$(PY) -m nandlib.colab .

# The built book in headless Chromium: every page of the table of contents loads without console
# errors, missing images or broken internal links; screenshots in _build/screenshots/. Needs Debian's
# chromium and chromium-driver (.ci/run installs them).
check-book: install
	$(PY) -m nandlib.sitecheck --book book --html _build/html --screenshots _build/screenshots
