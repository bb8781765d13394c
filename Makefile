# hwcaps-fs: the two commands README.md promises (run as root on Debian 12), and the rest.
#   make demo   build a real variant store, show the level this CPU gets, mount it, run it
#   make test   ruff, mypy and the test suite (real FUSE mounts, real gcc variants)
# Both install what they need (apt packages, a virtualenv) and can be run again at will.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc make python3 python3-venv python3-dev \
                attr libcap2-bin util-linux passwd
DEMO ?= /var/tmp/hwcaps-fs-demo
LEVELS := x86-64 x86-64-v2 x86-64-v3 x86-64-v4
DEMO_CFLAGS := -O3 -ffast-math -mneeded

.PHONY: deps apt venv demo demo-store test lint unit clean bench

deps: apt venv

# Install the Debian packages only when one is missing, so a second run needs no network.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(BIN)/hwcaps-fs

$(BIN)/hwcaps-fs: pyproject.toml | apt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The demo store, glibc layout: bin/hwcaps-demo is the baseline, glibc-hwcaps/<level>/bin/ the
# variants. Every build carries its ISA note (-mneeded), so a misplaced one would be caught.
demo-store: apt
	@mkdir -p $(DEMO)/store/bin $(DEMO)/mnt
	@for level in $(LEVELS); do \
	    if [ $$level = x86-64 ]; then dir=$(DEMO)/store/bin; \
	    else dir=$(DEMO)/store/glibc-hwcaps/$$level/bin; mkdir -p $$dir; fi; \
	    gcc $(DEMO_CFLAGS) -march=$$level -DLEVEL=\"$$level\" -o $$dir/hwcaps-demo bench/hwcaps-demo.c; \
	done
	@printf '#!/bin/sh\necho "a script with no variants: served as is"\n' > $(DEMO)/store/bin/hello
	@chmod 755 $(DEMO)/store/bin/hello
	@echo "demo store: $(DEMO)/store"; find $(DEMO)/store -type f | sort | sed 's/^/  /'

demo: deps demo-store
	@echo; echo '$$ hwcaps-fs levels'; $(BIN)/hwcaps-fs levels
	@echo; echo '$$ hwcaps-fs which $(DEMO)/store bin/hwcaps-demo'
	@$(BIN)/hwcaps-fs which $(DEMO)/store bin/hwcaps-demo
	@echo; echo '$$ hwcaps-fs check $(DEMO)/store'; $(BIN)/hwcaps-fs check $(DEMO)/store
	@$(BIN)/hwcaps-fs umount $(DEMO)/mnt 2>/dev/null || true
	@echo; echo '$$ hwcaps-fs mount --root $(DEMO)/store $(DEMO)/mnt'
	@$(BIN)/hwcaps-fs mount --root $(DEMO)/store $(DEMO)/mnt
	@set -e; trap '$(BIN)/hwcaps-fs umount $(DEMO)/mnt' EXIT; \
	echo '$$ ls -l $(DEMO)/mnt/bin'; ls -l $(DEMO)/mnt/bin; \
	echo '$$ getfattr -n user.hwcaps.source $(DEMO)/mnt/bin/hwcaps-demo'; \
	getfattr --absolute-names -n user.hwcaps.source $(DEMO)/mnt/bin/hwcaps-demo; \
	echo '$$ $(DEMO)/mnt/bin/hwcaps-demo 200000    # the variant this CPU runs'; \
	$(DEMO)/mnt/bin/hwcaps-demo 200000; \
	echo '$$ $(DEMO)/store/bin/hwcaps-demo 200000  # the baseline, for comparison'; \
	$(DEMO)/store/bin/hwcaps-demo 200000; \
	echo '$$ hwcaps-fs umount $(DEMO)/mnt'

lint: venv
	$(BIN)/ruff check hwcaps_fs tests bench
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest -q

test: deps lint unit

clean:
	-$(BIN)/hwcaps-fs umount $(DEMO)/mnt 2>/dev/null
	rm -rf $(DEMO) $(VENV) *.egg-info

# Benchmarks (issue: bench/): writes bench/results.md, which README.md quotes.
bench: deps
	$(BIN)/python bench/run.py --out bench/results.md
