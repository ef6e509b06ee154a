# imgfs: run containers straight from OCI images. `make help` lists the targets.

CC       ?= gcc
PREFIX   ?= /usr/local
BUILD    ?= build
WERROR   ?= 1
SANITIZE ?= 0
PKG_CONFIG ?= pkg-config

WARNINGS := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
	    -Wundef -Wpointer-arith
ifeq ($(WERROR),1)
WARNINGS += -Werror
endif

BASE_CFLAGS := -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 $(WARNINGS) -I. -MMD -MP -pthread
ifeq ($(SANITIZE),1)
OPT_CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	       -fno-sanitize-recover=undefined
OPT_LDFLAGS := -fsanitize=address,undefined
else
OPT_CFLAGS  := -O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fstack-clash-protection -fPIE
OPT_LDFLAGS := -pie -Wl,-z,relro,-z,now
endif

# Libraries outside libfuse: every module may use them. libcurl and libarchive are not
# linked but loaded at their first use (common/lazylib.c), under the SONAME found here;
# tests link them (they also call functions lazylib.c does not cover).
LAZY_PKGS := libarchive libcurl
LIB_PKGS := jansson zlib libisal libzstd libseccomp
LIB_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(LIB_PKGS) $(LAZY_PKGS) 2>/dev/null)
LIB_LIBS   := $(shell $(PKG_CONFIG) --libs $(LIB_PKGS) 2>/dev/null) -ldl
TEST_LIBS  := $(LIB_LIBS) $(shell $(PKG_CONFIG) --libs $(LAZY_PKGS) 2>/dev/null)
soname = $(shell objdump -p $(shell $(PKG_CONFIG) --variable=libdir $(1) 2>/dev/null)/$(2).so \
	2>/dev/null | awk '$$1 == "SONAME" { print $$2 }')
CURL_SONAME    := $(call soname,libcurl,libcurl)
ARCHIVE_SONAME := $(call soname,libarchive,libarchive)
FUSE_CFLAGS := $(shell $(PKG_CONFIG) --cflags fuse3 2>/dev/null)
FUSE_LIBS   := $(shell $(PKG_CONFIG) --libs fuse3 2>/dev/null)
CMOCKA_LIBS := $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null)
# The libraries imgfs and runner load at every start are linked in from their static archives
# where Debian's -dev package ships one (STATIC_PKGS): each shared library costs a process
# about 0.3-0.5 ms of mapping and relocation here, and a warm start runs imgfs twice and the
# runner once (docs/decisions/0911-static-libraries.md). STATIC_LIBS=0 links them shared.
STATIC_LIBS ?= 1
STATIC_PKGS := fuse3 jansson zlib libzstd libseccomp
ifeq ($(STATIC_LIBS),1)
pkg_libs = $(filter-out -lpthread -ldl -lrt,$(shell $(PKG_CONFIG) --libs --static $(1) 2>/dev/null))
run_libs = -Wl,--push-state,-Bstatic $(call pkg_libs,$(filter $(STATIC_PKGS),$(1))) \
	-Wl,--pop-state $(call pkg_libs,$(filter-out $(STATIC_PKGS),$(1))) -ldl -lrt
else
run_libs = $(shell $(PKG_CONFIG) --libs $(1) 2>/dev/null) -ldl
endif

CFLAGS   ?=
LDFLAGS  ?=
ALL_CFLAGS  = $(BASE_CFLAGS) $(OPT_CFLAGS) $(LIB_CFLAGS) $(CFLAGS)
ALL_LDFLAGS = $(OPT_LDFLAGS) -pthread $(LDFLAGS)

COMMON_SRC := $(wildcard common/*.c)
IMAGE_SRC  := $(wildcard fsd/image/*.c)
INDEX_SRC  := $(wildcard fsd/index/*.c)
FS_SRC     := $(wildcard fsd/fs/*.c)
FSD_SRC    := $(wildcard fsd/*.c)
RUNLIB_SRC := $(filter-out runner/main.c,$(wildcard runner/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
PROBE_SRC  := $(wildcard tests/probe/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBCOMMON := $(BUILD)/libcommon.a
LIBIMAGE  := $(BUILD)/libimage.a
LIBINDEX  := $(BUILD)/libindex.a
LIBFS     := $(BUILD)/libfs.a
LIBRUNNER := $(BUILD)/librunner.a
# Link order: users before what they use.
LIBS_ALL  := $(LIBIMAGE) $(LIBFS) $(LIBINDEX) $(LIBRUNNER) $(LIBCOMMON)

UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
REPLAY_BINS := $(patsubst tests/fuzz/fuzz_%.c,$(BUILD)/tests/replay_%,$(FUZZ_SRC))
PROBE_BINS := $(patsubst tests/probe/%.c,$(BUILD)/tests/probe/%,$(PROBE_SRC))

.PHONY: all check unit test integration layering-check bench bench-quick demo install clean help format format-check fuzz deps
.DEFAULT_GOAL := all

all: $(BUILD)/imgfs $(BUILD)/runner ## build build/imgfs and build/runner

# Only fsd/*.c see the fuse3 include path: a libfuse include in fsd/index, fsd/fs, fsd/image
# or common fails to build.
$(BUILD)/obj/fsd/%.o: fsd/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(FUSE_CFLAGS) -DFUSE_USE_VERSION=314 -c $< -o $@
$(BUILD)/obj/fsd/index/%.o: fsd/index/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@
$(BUILD)/obj/fsd/fs/%.o: fsd/fs/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@
$(BUILD)/obj/fsd/image/%.o: fsd/image/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIBCOMMON): $(call obj,$(COMMON_SRC))
$(LIBIMAGE): $(call obj,$(IMAGE_SRC))
$(LIBINDEX): $(call obj,$(INDEX_SRC))
$(LIBFS): $(call obj,$(FS_SRC))
$(LIBRUNNER): $(call obj,$(RUNLIB_SRC))
$(BUILD)/lib%.a:
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

# libgcc_s is linked, not left to glibc: libfuse ends its worker threads with pthread_cancel
# when a mount goes, and glibc's first cancel would dlopen libgcc_s (its unwinder) then, on
# the path of every umount (docs/decisions/0705-warm-start.md).
IMGFS_LIBS := $(call run_libs,fuse3 $(LIB_PKGS)) \
	-Wl,--push-state,--no-as-needed -lgcc_s -Wl,--pop-state
$(BUILD)/imgfs: $(call obj,$(FSD_SRC)) $(LIBS_ALL)
	$(CC) $(ALL_LDFLAGS) -o $@ $(call obj,$(FSD_SRC)) $(LIBS_ALL) $(IMGFS_LIBS)

$(BUILD)/runner: $(call obj,runner/main.c) $(LIBRUNNER) $(LIBCOMMON)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call run_libs,$(LIB_PKGS))

# Docker's default seccomp profile is compiled to BPF once, at build time, from the same rules
# the runner would build at run time; runner/security.c embeds the generated header.
SECCOMP_GEN := $(BUILD)/gen/gen_seccomp
SECCOMP_BPF := $(BUILD)/gen/runner/seccomp_default_bpf.h
$(SECCOMP_GEN): $(call obj,runner/gen/gen_seccomp.c runner/seccomp_profile.c runner/plan.c) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIBCOMMON) $(LIB_LIBS)
$(SECCOMP_BPF): $(SECCOMP_GEN)
	@mkdir -p $(dir $@)
	$(SECCOMP_GEN) >$@.tmp && mv $@.tmp $@
$(call obj,runner/security.c): $(SECCOMP_BPF)
$(call obj,runner/security.c): ALL_CFLAGS += -I$(BUILD)/gen
$(call obj,common/lazylib.c): ALL_CFLAGS += $(if $(CURL_SONAME),-DCURL_SONAME='"$(CURL_SONAME)"') \
	$(if $(ARCHIVE_SONAME),-DARCHIVE_SONAME='"$(ARCHIVE_SONAME)"')

# Unit tests: cmocka, no libfuse, no root. Each test links only its module(s) and common/:
# tests/unit/test_NAME.mk sets test_NAME_SRC (the module sources it needs); likewise
# tests/fuzz/fuzz_NAME.mk sets fuzz_NAME_SRC for the corpus replay binary.
-include $(wildcard tests/unit/*.mk tests/fuzz/*.mk)
.SECONDEXPANSION:
$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(BUILD)/obj/tests/unit/unit_filter.o $$(call obj,$$(test_$$*_SRC)) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIBCOMMON) $(CMOCKA_LIBS) $(TEST_LIBS)

# Fuzz corpora are replayed under gcc in `make check`; `make fuzz` runs libFuzzer (clang).
$(BUILD)/tests/replay_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay_main.o $$(call obj,$$(fuzz_$$*_SRC)) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIBCOMMON) $(TEST_LIBS)

# Probes run inside containers: static, no sanitizers.
$(BUILD)/tests/probe/%: tests/probe/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -D_GNU_SOURCE -O2 -Wall -Wextra -static -o $@ $<

deps: ## install build, test and bench dependencies (apt-get, idempotent)
	sh contrib/install-deps.sh

# Object files of tests are not intermediates: keep them, so a second `make unit` relinks
# nothing that did not change.
.SECONDARY:

unit: $(UNIT_BINS) $(REPLAY_BINS) ## run unit tests and fuzz corpus replays
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done
	@set -e; for t in $(REPLAY_BINS); do n=$${t##*/replay_}; \
		echo "== $$t tests/fuzz/corpus/$$n"; $$t tests/fuzz/corpus/$$n; done

integration: all $(PROBE_BINS) ## run integration tests (root), or only TESTS="test_a test_b"
	BUILD=$(BUILD) sh tests/integration/run.sh $(TESTS)

# One test by name: a unit test (T=test_tree), a corpus replay (T=replay_tree) or an
# integration test (T=test_run); unit tests take cmocka's filter in F (F='*rename*').
test: ## run one test: make test T=test_tree [F=GLOB], T=replay_tree or T=test_run
	@if [ -z "$(T)" ]; then echo "make test T=NAME (see tests/README.md)" >&2; exit 2; fi
	@if [ -f tests/unit/$(T).c ]; then $(MAKE) --no-print-directory $(BUILD)/tests/$(T) && \
		$(if $(F),CMOCKA_TEST_FILTER='$(F)') $(BUILD)/tests/$(T); \
	elif [ -f tests/fuzz/fuzz_$(T:replay_%=%).c ]; then \
		$(MAKE) --no-print-directory $(BUILD)/tests/$(T) && \
		$(BUILD)/tests/$(T) tests/fuzz/corpus/$(T:replay_%=%); \
	elif [ -f tests/integration/$(T).sh ]; then $(MAKE) --no-print-directory integration TESTS=$(T); \
	else echo "make test: no test called '$(T)'" >&2; exit 2; fi

# Dependency rules: fsd/index never includes fsd/fs; fsd/fs reaches fsd/index only in
# lower_tree.c (the one place the two halves meet); neither sees fsd/image or the runner.
layering-check: ## fail when an include crosses the module boundaries
	@bad=$$(grep -n '#include "fsd/\(fs\|image\)/\|#include "runner/' fsd/index/*.[ch]; \
		grep -n '#include "fsd/\(index\|image\)/\|#include "runner/' $$(ls fsd/fs/*.[ch] | grep -v lower_tree.c); \
		grep -n '#include "fsd/\|#include "runner/' common/*.[ch]; \
		grep -n '#include "fsd/' runner/*.[ch] runner/gen/*.c); \
	if [ -n "$$bad" ]; then echo "layering-check: includes across module boundaries:"; echo "$$bad"; exit 1; fi

check: deps ## install deps, build, run unit + integration tests and the bench harness (quick)
	$(MAKE) format-check
	$(MAKE) layering-check
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) bench-quick

FUZZ_SECONDS ?= 30
fuzz: ## run each libFuzzer target for FUZZ_SECONDS
	BUILD=$(BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/run.sh

bench: all ## measure against skopeo/umoci/runc/bwrap/archivemount; writes bench/RESULTS.md
	BUILD=$(BUILD) sh bench/run.sh

bench-quick: all ## the bench harness in quick mode (small images; results in $(BUILD)/bench-quick)
	BUILD=$(BUILD) sh bench/run.sh --quick

demo: deps ## build, serve a busybox image on loopback, pull, mount, run it, clean up
	$(MAKE) all
	BUILD=$(BUILD) sh contrib/demo.sh

install: all ## install imgfs and runner under PREFIX
	install -D -m 0755 $(BUILD)/imgfs $(DESTDIR)$(PREFIX)/bin/imgfs
	install -D -m 0755 $(BUILD)/runner $(DESTDIR)$(PREFIX)/bin/runner

# tests/pjdfstest/ is a copy of a third-party suite, kept as it came.
format: ## reformat the C sources with clang-format
	clang-format -i $$(git ls-files -co --exclude-standard '*.c' '*.h' ':!:tests/pjdfstest/')

format-check: ## fail when a C source is not clang-formatted
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h' ':!:tests/pjdfstest/' 2>/dev/null || \
		find common fsd runner tests -path tests/pjdfstest -prune -o -name '*.[ch]' -print)

clean: ## remove build/
	rm -rf $(BUILD)

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/' | expand -t 16

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
