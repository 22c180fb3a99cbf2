# Herald build. Everything lands under $(BUILD); sources never see an object file.
#
#   make            build the gateway, the broker tools and libraries
#   make test       install what is missing, build, run unit + end-to-end tests
#   make run        install what is missing, build, start redis + a gateway
#   make test-asan  the same tests under AddressSanitizer + UBSan (+ LeakSanitizer)
#   make fuzz       libFuzzer targets (clang), FUZZ_SECONDS each (default 60)
#   make format     clang-format every C file in place

BUILD    ?= build
CC       ?= cc
PKGS     := libevent_core libevent_openssl hiredis libjwt jansson openssl
PYTHON   ?= /usr/bin/python3

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
OPT      ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) -MMD -MP -Icommon -Igateway -Ibroker
LDLIBS   += -lm

ifeq ($(SANITIZE),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=address,undefined
endif

# pkg-config is asked only when building, so that `make deps` works on a bare machine.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

COMMON_SRC  := $(wildcard common/*.c)
GATEWAY_SRC := $(wildcard gateway/*.c)
PUBLIB_SRC  := broker/herald_pub.c
UNIT_SRC    := $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

COMMON_LIB  := $(BUILD)/libheraldcommon.a
PUB_LIB     := $(BUILD)/libheraldpub.a
BINS        := $(BUILD)/herald-gateway $(BUILD)/herald-token $(BUILD)/herald-pub \
               $(BUILD)/herald-publisher
UNIT_BINS   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.SECONDARY:
.PHONY: all deps test unit e2e run test-asan fuzz fuzz-smoke bench bench-recovery test-browser clean format
all: $(BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(COMMON_LIB): $(call obj,$(COMMON_SRC))
	$(AR) rcs $@ $^

$(PUB_LIB): $(call obj,$(PUBLIB_SRC))
	$(AR) rcs $@ $^

# The browser files are compiled into the gateway (web/embed.py).
WEB_FILES := web/index.html web/herald.js web/herald.d.ts
$(BUILD)/gen/web_assets.c: $(WEB_FILES) web/embed.py
	@mkdir -p $(dir $@)
	$(PYTHON) web/embed.py $@ $(WEB_FILES)

$(BUILD)/obj/gen/web_assets.o: $(BUILD)/gen/web_assets.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/herald-gateway: $(call obj,$(GATEWAY_SRC)) $(BUILD)/obj/gen/web_assets.o $(COMMON_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/herald-token: $(call obj,broker/herald_token.c) $(COMMON_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/herald-pub: $(call obj,broker/herald_pub_cli.c) $(PUB_LIB) $(COMMON_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/herald-publisher: $(call obj,broker/publisher.c) $(PUB_LIB) $(COMMON_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/tests/%: $(call obj,tests/unit/%.c) $(PUB_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

# The subscription index is tested against fakes of the bus and connections.
$(BUILD)/tests/test_subs: $(call obj,tests/unit/test_subs.c gateway/subs.c gateway/shared_frame.c \
                          gateway/clock.c) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

# Client commands against a fake connection and the real index.
$(BUILD)/tests/test_session: $(call obj,tests/unit/test_session.c gateway/session.c gateway/subs.c \
                             gateway/shared_frame.c gateway/clock.c) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

# Streams over a real socket pair and a real event loop.
$(BUILD)/tests/test_stream: $(call obj,tests/unit/test_stream.c gateway/stream.c \
                            gateway/shared_frame.c gateway/clock.c) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/tests/test_reply_arena: $(call obj,tests/unit/test_reply_arena.c gateway/reply_arena.c) \
                                 $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/tests/test_wheel: $(call obj,tests/unit/test_wheel.c gateway/wheel.c) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/tests/test_handshake: $(call obj,tests/unit/test_handshake.c gateway/handshake.c) \
                               $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

# Drives gateway/resp_link against a real Redis (tests/e2e/test_resp_link.py).
E2E_BINS := $(BUILD)/tests/resp_link_driver
$(BUILD)/tests/resp_link_driver: $(call obj,tests/e2e/resp_link_driver.c gateway/resp_link.c \
                                 gateway/reply_arena.c gateway/clock.c) \
                                 $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

# Installs the Debian packages the build and the tests need, when any is missing.
deps:
	@sh deploy/install-deps.sh

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

e2e: all $(E2E_BINS)
	HERALD_BUILD=$(abspath $(BUILD)) HERALD_CC="$(CC)" HERALD_LDFLAGS="$(LDFLAGS)" \
	HERALD_SANITIZE="$(SANITIZE)" $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

test: deps
	$(MAKE) all $(UNIT_BINS)
	$(MAKE) unit
	$(MAKE) e2e

test-asan: deps
	$(MAKE) BUILD=build/asan SANITIZE=1 OPT="-O1 -g" CC=clang test

run: deps all
	@sh deploy/run-dev.sh $(BUILD)

# libFuzzer needs clang; each target links the common sources built for fuzzing.
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -std=c11 -D_GNU_SOURCE $(WARN) -g -O1 -Icommon -Igateway -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all
$(BUILD)/fuzz/%: tests/fuzz/%.c $(COMMON_SRC)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) $(PKG_CFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

# Redis replies are parsed with the gateway's reader, as its links do.
$(BUILD)/fuzz/fuzz_cluster_slots: gateway/reply_arena.c

fuzz: deps $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do \
	  mkdir -p $(BUILD)/fuzz/corpus-$$(basename $$f); \
	  echo "== $$f ($(FUZZ_SECONDS) s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=$(BUILD)/fuzz/ \
	      $(BUILD)/fuzz/corpus-$$(basename $$f) tests/fuzz/seeds/$$(basename $$f); \
	done

fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=10

# The load generator and the benchmark scenarios (not part of make test).
$(BUILD)/herald-load: $(call obj,tests/bench/herald_load.c) $(COMMON_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

# The syscall floor: CPU of one 150-byte write() to a loopback TCP socket.
$(BUILD)/bench-floor: $(call obj,tests/bench/floor.c)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# nginx with nchan (the peer) and perf (syscall counts, profiles): the bench's own.
bench: deps all $(BUILD)/herald-load $(BUILD)/bench-floor
	@sh deploy/install-deps.sh nginx libnginx-mod-nchan linux-perf
	sh tests/bench/run.sh $(abspath $(BUILD))
	$(PYTHON) tests/bench/cluster_bench.py $(abspath $(BUILD))
	$(PYTHON) tests/bench/http_transports.py $(abspath $(BUILD))

# History and recovery alone: recovery time, reconnect herd (docs/PERFORMANCE.md).
bench-recovery: deps all
	/usr/bin/python3 tests/bench/recovery.py $(abspath $(BUILD))

# Browser tests: node's test runner for herald.js, Playwright (playwright-core
# from npm) driving Debian's Chromium for the dashboard.
test-browser: deps all
	sh tests/browser/run.sh $(abspath $(BUILD))

clean:
	rm -rf build

format:
	clang-format -i $(wildcard common/*.[ch] gateway/*.[ch] broker/*.[ch] tests/unit/*.[ch] tests/fuzz/*.c tests/bench/*.c)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
