# hwcaps-fs: the two commands README.md promises (run as root on Debian 12), and the rest.
#   make demo   build a real variant store, show the level this CPU gets, mount it, run it
#   make test   ruff, mypy and the test suite (real FUSE mounts, real gcc variants)
#   make quick  the tests that need no mount (seconds)
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

.PHONY: deps apt apt-test venv demo demo-store test lint unit quick clean bench soak man completion

deps: apt venv

# $(call quietly,COMMANDS): run COMMANDS (no commas) with their output kept aside, and shown
# only if they fail: the demo and the tests show themselves, not the installation.
quietly = log=$$(mktemp); if ( $(1) ) >"$$log" 2>&1; then rm -f "$$log"; \
    else status=$$?; cat "$$log" >&2; rm -f "$$log"; exit $$status; fi

# Install the Debian packages only when one is missing, so a second run needs no network.
apt_install = missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
    | grep -q 'install ok installed' || echo $$p; done); \
    if [ -n "$$missing" ]; then \
        echo "installing Debian packages:" $$missing; \
        $(call quietly,apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing); \
    fi

apt:
	@$(call apt_install,$(APT_PACKAGES))

# What only some tests use: setfacl (ACL cases of the trust rules) and Debian's own pyfuse3 and
# trio (the daemon run on them, tests/test_fastpath.py). Without them those tests skip.
APT_TEST_PACKAGES := acl python3-pyfuse3 python3-trio

apt-test: apt
	@$(call apt_install,$(APT_TEST_PACKAGES))

venv: $(BIN)/hwcaps-fs

# The tests cover hwcaps-fs with archspec (here) and without it (tests/test_archspec.py).
VENV_EXTRAS := .[test,archspec]

$(BIN)/hwcaps-fs: pyproject.toml | apt
	@echo "creating $(VENV) with hwcaps-fs and its Python dependencies"
	@$(call quietly,$(PYTHON) -m venv $(VENV) && $(BIN)/pip install --upgrade pip \
	    && $(BIN)/pip install -e '$(VENV_EXTRAS)')
	@touch $@

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
	@echo; echo '$$ hwcaps-fs run --root $(DEMO)/store -- hwcaps-demo 20000  # as a container entrypoint'
	@$(BIN)/hwcaps-fs run --root $(DEMO)/store -- hwcaps-demo 20000

lint: venv
	$(BIN)/ruff check hwcaps_fs tests bench
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest -q

# The tests that need no FUSE mount (pytest marker `mount`, see tests/conftest.py): seconds.
quick: venv
	$(BIN)/python -m pytest -q -m 'not mount'

test: deps apt-test lint unit

clean:
	-$(BIN)/hwcaps-fs umount $(DEMO)/mnt 2>/dev/null
	rm -rf $(DEMO) $(VENV) *.egg-info build/man build/completion

# The manual pages and the bash completion, generated from the parser (no venv needed: they
# import only the standard library and hwcaps_fs, so a package build runs them too).
man:
	PYTHONPATH=. $(PYTHON) -m hwcaps_fs.commands.manpage build/man

completion:
	PYTHONPATH=. $(PYTHON) -m hwcaps_fs.commands.completion build/completion/hwcaps-fs

# Benchmarks: write bench/results.md, and the summary of it that README.md quotes.
bench: deps
	$(BIN)/python -m bench.run --out bench/results.md --readme README.md

# Soak: SOAK_SECONDS of parallel execs through a mount while its store is churned;
# writes bench/soak-results.md, which docs/testing.md quotes between its soak markers.
SOAK_SECONDS ?= 600
soak: deps
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS) --out bench/soak-results.md \
	    --doc docs/testing.md

# ---- install, uninstall, boot-test (mount-helpers/, systemd-units/, tests/boot/) -----------------
# make install [PREFIX=/usr/local] [DESTDIR=]: the Python package goes into its own virtualenv,
# $(INSTALL_VENV) (Debian's system Python refuses pip installs, and a venv keeps pyfuse3, trio
# and archspec apart from the distribution's), with $(BINDIR)/hwcaps-fs a symlink to its
# console script. The mount helpers go to /sbin whatever PREFIX is, because mount(8) looks for
# mount.<type> only in /sbin:/sbin/fs.d:/sbin/fs; they get the absolute path of hwcaps-fs
# written in, since mount(8) and systemd run them without PATH. The units go to $(UNITDIR),
# not enabled (see docs/boot.md). Building needs the `apt` packages
# (pyfuse3 is compiled); the target system needs python3 (same version), libfuse3-3 and fuse3
# (fusermount3, for auto_unmount). With DESTDIR, the venv is built in $(DESTDIR)$(INSTALL_VENV)
# and its scripts are rewritten to name $(INSTALL_VENV).
# The interpreter is a copy (--copies), not a symlink to /usr/bin/python3: over /usr/bin, a
# daemon killed with its fusermount3 leaves /usr/bin dead, and hwcaps-fs must still start to
# clear it (docs/boot.md, "When the daemon is killed").
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
INSTALL_VENV ?= $(PREFIX)/lib/hwcaps-fs
SBINDIR ?= /sbin
UNITDIR ?= /etc/systemd/system
PIP_INSTALL_FLAGS ?=
HELPERS := mount.hwcaps-fs mount.fuse.hwcaps-fs
UNITS := $(notdir $(wildcard systemd-units/*.mount systemd-units/*.service))
BOOT_APT_PACKAGES := mmdebstrap systemd-container qemu-system-x86 e2fsprogs
BOOT_TEST_ARGS ?=

MANDIR ?= $(PREFIX)/share/man
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions

.PHONY: install install-python install-helpers install-units install-docs uninstall boot-deps \
        boot-test

install: install-python install-helpers install-units install-docs

install-python: apt
	$(PYTHON) -m venv --copies $(DESTDIR)$(INSTALL_VENV)
	rm -rf build  # setuptools' staging copy: a module deleted since would be packaged again
	$(DESTDIR)$(INSTALL_VENV)/bin/pip install -q $(PIP_INSTALL_FLAGS) '.[archspec]'
	@if [ -n "$(DESTDIR)" ]; then \
	    grep -rlI --exclude-dir=__pycache__ -- '$(DESTDIR)$(INSTALL_VENV)' \
	        $(DESTDIR)$(INSTALL_VENV)/bin $(DESTDIR)$(INSTALL_VENV)/pyvenv.cfg \
	        | xargs -r sed -i 's|$(DESTDIR)$(INSTALL_VENV)|$(INSTALL_VENV)|g'; \
	fi
	install -d $(DESTDIR)$(BINDIR)
	ln -sfn $(INSTALL_VENV)/bin/hwcaps-fs $(DESTDIR)$(BINDIR)/hwcaps-fs

install-helpers:
	install -d $(DESTDIR)$(SBINDIR)
	sed "s|^CONFIGURED=.*|CONFIGURED='$(BINDIR)/hwcaps-fs'|" mount-helpers/mount.hwcaps-fs \
	    > $(DESTDIR)$(SBINDIR)/mount.hwcaps-fs
	chmod 755 $(DESTDIR)$(SBINDIR)/mount.hwcaps-fs
	ln -sfn mount.hwcaps-fs $(DESTDIR)$(SBINDIR)/mount.fuse.hwcaps-fs

install-units:
	install -d $(DESTDIR)$(UNITDIR)
	for unit in $(UNITS); do \
	    sed 's|/usr/local/bin/hwcaps-fs|$(BINDIR)/hwcaps-fs|g' "systemd-units/$$unit" \
	        > "$(DESTDIR)$(UNITDIR)/$$unit" && chmod 644 "$(DESTDIR)$(UNITDIR)/$$unit"; \
	done

install-docs: man completion
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(COMPLETIONDIR)
	install -m 644 build/man/hwcaps-fs.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 build/man/mount.hwcaps-fs.8 $(DESTDIR)$(MANDIR)/man8/
	ln -sfn mount.hwcaps-fs.8 $(DESTDIR)$(MANDIR)/man8/mount.fuse.hwcaps-fs.8
	install -m 644 build/completion/hwcaps-fs $(DESTDIR)$(COMPLETIONDIR)/hwcaps-fs

uninstall:
	rm -f $(DESTDIR)$(MANDIR)/man1/hwcaps-fs.1 $(DESTDIR)$(MANDIR)/man8/mount.hwcaps-fs.8 \
	    $(DESTDIR)$(MANDIR)/man8/mount.fuse.hwcaps-fs.8 $(DESTDIR)$(COMPLETIONDIR)/hwcaps-fs
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) $(addprefix $(DESTDIR)$(SBINDIR)/,$(HELPERS))
	rm -f $(DESTDIR)$(BINDIR)/hwcaps-fs
	rm -rf $(DESTDIR)$(INSTALL_VENV)

boot-deps:
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(BOOT_APT_PACKAGES)"

# Boots a Debian 12 rootfs with hwcaps-fs installed (make install DESTDIR=...) under
# systemd-nspawn and under QEMU (TCG) with four CPU models; see tests/boot/run.py.
boot-test: deps boot-deps
	$(BIN)/python -m tests.boot.run $(BOOT_TEST_ARGS)
# ---- end of install, uninstall, boot-test -------------------------------------------------------

# ---- deb, deb-test, container-test (debian/, tests/boot/, tests/containers/) --------------------
# make deb: the Debian package, built from a copy of this tree (debian/rules: pybuild, plus the
# install-helpers and install-units targets above with the package's paths) and checked with
# lintian; dist/ receives hwcaps-fs_<version>_<arch>.deb, the debug symbols of its C library
# (hwcaps-fs-dbgsym_*.deb), the .buildinfo and .changes, and dist/lintian.txt. make deb-test
# boots it (systemd-nspawn, usr-bin.mount enabled) in a Debian 12 root filesystem made of
# Debian's own packages; make container-test runs it under podman.
# See docs/packaging.md.
DEB_APT_PACKAGES := dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all-dev \
                    python3-setuptools libfuse3-dev pkg-config lintian
CONTAINER_APT_PACKAGES := podman runc uidmap mmdebstrap systemd-container
DEB_WORK := build/deb
DIST := dist

.PHONY: deb deb-deps deb-test container-test

deb-deps:
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(DEB_APT_PACKAGES)"

deb: deb-deps
	rm -rf $(DEB_WORK) && mkdir -p $(DEB_WORK)/src $(DIST)
	tar -c --exclude-vcs --exclude-vcs-ignores --exclude=./build --exclude=./$(DIST) . \
	    | tar -x -C $(DEB_WORK)/src
	# The system's PATH: the package is built for, and with, Debian's python3.
	cd $(DEB_WORK)/src && PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	    dpkg-buildpackage -b -us -uc --no-sign > ../build.log 2>&1 \
	    || { tail -40 ../build.log; echo "make deb: failed, see $(DEB_WORK)/build.log"; exit 1; }
	rm -f $(DIST)/hwcaps-fs_* $(DIST)/hwcaps-fs-dbgsym_*
	mv $(DEB_WORK)/hwcaps-fs_* $(DEB_WORK)/hwcaps-fs-dbgsym_* $(DIST)/
	lintian --fail-on error --tag-display-limit 0 $(DIST)/hwcaps-fs_*.changes \
	    > $(DIST)/lintian.txt; status=$$?; cat $(DIST)/lintian.txt; exit $$status
	@ls -l $(DIST)/*.deb

# Boots the package: apt-get installs dist/hwcaps-fs_*.deb into a Debian 12 rootfs (Debian's
# packages only), then the boot test runs on it under systemd-nspawn
# nspawn (DEB_TEST_ARGS= boots QEMU too). The base rootfs is cached under $(DEB_TEST_WORK).
DEB_TEST_WORK ?= /var/tmp/hwcaps-fs-deb-test
DEB_TEST_ARGS ?= --only=nspawn
deb-test: deb venv boot-deps
	$(BIN)/python -m tests.boot.run --work $(DEB_TEST_WORK) \
	    --deb $$(ls -t $(DIST)/hwcaps-fs_*.deb | head -1) $(DEB_TEST_ARGS)

# hwcaps-fs run as a podman container's entrypoint (tests/containers/test_podman.py), in an
# image imported from a Debian 12 rootfs with dist/'s .deb installed.
CONTAINER_TEST_ARGS ?=
container-test: deb venv
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(CONTAINER_APT_PACKAGES)"
	HWCAPS_FS_CONTAINER_TEST=1 $(BIN)/python -m pytest -v -rs tests/containers \
	    $(CONTAINER_TEST_ARGS)
