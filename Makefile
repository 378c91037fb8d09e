# triad: build, test, demo, lab, lint and sanitizer builds.
#
# `make` builds ./triad. `make test` and `make demo` first run `make deps`
# (Debian packages) and the build. See README.md.

VERSION := 0.1.0

CC      := gcc
BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=

# Debian packages the project needs: build, tests, the lab, lint, model.
DEB_PKGS := gcc make pkg-config libuv1-dev libpq-dev libcurl4-openssl-dev \
	libc-ares-dev libyaml-dev libssl-dev libjansson-dev libldns-dev \
	libmicrohttpd-dev libcmocka-dev postgresql-15 postgresql-client-15 \
	bind9 bind9-dnsutils nginx openssl curl jq nftables iproute2 procps \
	psmisc python3 python3-psycopg2 python3-yaml clang clang-format cppcheck valgrind \
	libclang-rt-14-dev spin tmux groff-base patroni etcd-server

PKGS := libuv libpq libcurl libcares yaml-0.1 openssl jansson ldns libmicrohttpd

WARN := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes \
	-Wmissing-prototypes -Wconversion -Wno-sign-conversion \
	-Wvla -Wundef -Wpointer-arith -Werror

CFLAGS  ?= -O2 -g
SAN     ?=
# Lazily evaluated: `make deps` must work before pkg-config knows the libraries.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS  = -std=c11 -D_GNU_SOURCE -I. $(WARN) $(CFLAGS) $(SAN) $(PKG_CFLAGS) \
	-DTRIAD_VERSION='"$(VERSION)"'
ALL_LDFLAGS = $(SAN) $(LDFLAGS)
LIBS        = $(PKG_LIBS) -lm

SRC_DIRS := lib probes fencing runbooks runbooks/actions orchestrator
SRCS     := $(foreach d,$(SRC_DIRS),$(wildcard $(d)/*.c))
MAIN_SRC := orchestrator/main.c
LIB_SRCS := $(filter-out $(MAIN_SRC),$(SRCS))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
MAIN_OBJ := $(MAIN_SRC:%.c=$(BUILD)/obj/%.o)
LIBTRIAD := $(BUILD)/libtriad.a

UNIT_SRCS  := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_HELPER_SRCS := $(filter-out $(UNIT_SRCS),$(wildcard tests/unit/*.c))
UNIT_HELPER_OBJS := $(UNIT_HELPER_SRCS:%.c=$(BUILD)/obj/%.o)

# Small C fixtures (hostile servers and the like) used by the suites.
FIXTURE_SRCS := $(wildcard tests/fixtures/*.c)
FIXTURE_BINS := $(FIXTURE_SRCS:tests/fixtures/%.c=$(BUILD)/fixtures/%)

.PHONY: all deps test unit integration demo lab-up lab-down lint asan \
	valgrind model clean install uninstall fmt unit-bins bench bench-probes bench-patroni \
	man chaos fuzz fuzz-bins

all: triad

# Replaced by rename: a running daemon keeps its old binary ("text file busy").
triad: $(BUILD)/triad
	@cp $< $@.tmp && mv -f $@.tmp $@

$(BUILD)/triad: $(MAIN_OBJ) $(LIBTRIAD)
	@echo "  LINK    $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(LIBTRIAD): $(LIB_OBJS)
	@rm -f $@
	@ar rcs $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(UNIT_HELPER_OBJS) $(LIBTRIAD)
	@mkdir -p $(dir $@)
	@echo "  TEST    $<"
	@$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(UNIT_HELPER_OBJS) $(LIBTRIAD) \
		$(ALL_LDFLAGS) $(LIBS) -lcmocka

$(BUILD)/fixtures/%: tests/fixtures/%.c $(LIBTRIAD)
	@mkdir -p $(dir $@)
	@echo "  FIXTURE $<"
	@$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBTRIAD) $(ALL_LDFLAGS) $(LIBS)

unit-bins: $(UNIT_BINS) $(FIXTURE_BINS)

deps:
	@sh mk/deps.sh $(DEB_PKGS)

# Every suite; the last line of output is `N passed, N failed`.
test: deps
	@$(MAKE) --no-print-directory all unit-bins
	@BUILD=$(BUILD) tests/run.sh all

unit: all unit-bins
	@BUILD=$(BUILD) tests/run.sh unit

integration: all unit-bins
	@BUILD=$(BUILD) tests/run.sh integration

demo: deps
	@$(MAKE) --no-print-directory all unit-bins
	@examples/demo.sh

# The chaos campaign: N randomized fault schedules over the lab (each about
# a minute and a half), invariants checked after each; SEED replays one.
N ?= 20
D ?= 45
chaos: all unit-bins
	@tests/chaos/campaign.sh -n $(N) -d $(D) $(if $(SEED),-s $(SEED))

# The benchmarks (not part of `make test`): detection time over 20 kills,
# 10 automatic dc1-loss drills (RTO and its parts), then the probe load
# (one daemon with 1,000 http + 100 postgres probes: CPU, RSS; kill ->
# +sdown latency). About 15 minutes; `make bench-probes` alone about 6.
bench: all unit-bins
	@tests/bench/detection.sh
	@tests/bench/failover.sh
	@tests/bench/probes.sh

bench-probes: all unit-bins
	@tests/bench/probes.sh

# triad against Patroni (Debian's patroni + etcd) on the lab's layout: 10
# kills of the primary site each (triad, Patroni defaults, Patroni tuned),
# time to a writable primary and to client writes, lost writes, idle
# footprint. About 20 minutes.
bench-patroni: deps
	@$(MAKE) --no-print-directory all unit-bins
	@tests/bench/vs-patroni.sh

lab-up: all unit-bins
	@examples/lab/lab.sh up

lab-down:
	@examples/lab/lab.sh down

# AddressSanitizer + UndefinedBehaviorSanitizer build and the unit suites.
asan:
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" build-asan/triad unit-bins
	@BUILD=build-asan ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		tests/run.sh unit

# libFuzzer harnesses (tests/fuzz/fuzz_*.c), built with clang in build-fuzz:
# the library with ASan+UBSan and coverage hooks, each harness linked with
# libFuzzer. `make fuzz` runs every harness for FUZZ_SECONDS on a scratch copy
# of its corpus and fails on any crash, leak or timeout; `make fuzz-NAME`
# runs one (e.g. `make fuzz-quorum FUZZ_SECONDS=600`). See tests/fuzz/README.md.
FUZZ_BUILD   := build-fuzz
FUZZ_SECONDS ?= 30
FUZZ_SAN     := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
FUZZ_SRCS    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_HELPER_SRCS := $(filter-out $(FUZZ_SRCS),$(wildcard tests/fuzz/*.c))
FUZZ_HELPER_OBJS := $(FUZZ_HELPER_SRCS:%.c=$(BUILD)/obj/%.o)
FUZZ_BINS    := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_MAKE     = $(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang \
	CFLAGS="-O1 -g -fno-omit-frame-pointer" SAN="$(FUZZ_SAN)"

$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_HELPER_OBJS) $(LIBTRIAD)
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $<"
	@$(CC) $(ALL_CFLAGS) -Itests/fuzz -o $@ $< $(FUZZ_HELPER_OBJS) $(LIBTRIAD) \
		$(ALL_LDFLAGS) -fsanitize=fuzzer $(LIBS)

fuzz-bins: $(FUZZ_BINS)

fuzz:
	@$(FUZZ_MAKE) fuzz-bins
	@BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

fuzz-%:
	@$(FUZZ_MAKE) $(FUZZ_BUILD)/fuzz/fuzz_$*
	@BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh $*

# The unit suites under valgrind: any leak or error fails.
valgrind: all unit-bins
	@BUILD=$(BUILD) TRIAD_VALGRIND=1 tests/run.sh unit

lint:
	@mk/lint.sh

fmt:
	@clang-format -i $(SRCS) $(wildcard lib/*.h probes/*.h fencing/*.h runbooks/*.h \
		runbooks/actions/*.h orchestrator/*.h) $(UNIT_SRCS) $(FIXTURE_SRCS) \
		$(wildcard tests/fuzz/*.c tests/fuzz/*.h)

model:
	@tests/model/run.sh

# Manual pages, generated: triad(1) from the CLI's own command table
# (`triad --man`), triad.yaml(5) from the annotated examples/triad.yaml.
man: $(BUILD)/man/triad.1 $(BUILD)/man/triad.yaml.5

$(BUILD)/man/triad.1: triad
	@mkdir -p $(dir $@)
	@./triad --man >$@

$(BUILD)/man/triad.yaml.5: examples/triad.yaml mk/man-yaml.sh
	@mkdir -p $(dir $@)
	@sh mk/man-yaml.sh examples/triad.yaml $(VERSION) >$@

install: all man
	install -D -m 0755 triad $(DESTDIR)$(PREFIX)/bin/triad
	install -D -m 0644 $(BUILD)/man/triad.1 $(DESTDIR)$(PREFIX)/share/man/man1/triad.1
	install -D -m 0644 $(BUILD)/man/triad.yaml.5 $(DESTDIR)$(PREFIX)/share/man/man5/triad.yaml.5
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/triad/runbooks
	for f in runbooks/*.yaml; do [ -e "$$f" ] && \
		install -m 0644 "$$f" $(DESTDIR)$(PREFIX)/share/triad/runbooks/; done; true
	install -D -m 0644 examples/triad.yaml $(DESTDIR)$(PREFIX)/share/triad/triad.yaml.example

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/triad $(DESTDIR)$(PREFIX)/share/man/man1/triad.1 \
		$(DESTDIR)$(PREFIX)/share/man/man5/triad.yaml.5
	rm -rf $(DESTDIR)$(PREFIX)/share/triad

clean:
	rm -rf build build-asan build-fuzz triad

# Test helper objects are not intermediates: keep them between builds.
.SECONDARY: $(UNIT_HELPER_OBJS) $(FUZZ_HELPER_OBJS)

-include $(LIB_OBJS:.o=.d) $(MAIN_OBJ:.o=.d) $(UNIT_HELPER_OBJS:.o=.d) $(FUZZ_HELPER_OBJS:.o=.d)
