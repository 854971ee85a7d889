# cnnscope - build, test, demo.
#
#   make                 build/cnnscope and build/libcnnscope.a
#   make test            the whole test suite; ends with "N passed, N failed"
#   make demo            the main job on the default model (see README.md)
#   make bench           cnnscope vs ONNX Runtime and PyTorch (bench/compare.py; BENCH_ARGS=--quick)
#   make OPENMP=0        build without OpenMP
#   make SANITIZE=1      AddressSanitizer + UndefinedBehaviorSanitizer build (clang, in build-san/)
#   make CC=clang        any C11 compiler
#   make fuzz FUZZ_SECONDS=N   each libFuzzer harness (tests/fuzz/) N seconds (clang, build-fuzz/)

CC      ?= cc
OPENMP  ?= 1
SANITIZE ?= 0
PYTHON  ?= /usr/bin/python3

BUILD   := build
ifeq ($(SANITIZE),1)
BUILD   := build-san
# clang's UBSan catches more than gcc's (e.g. arithmetic on a null pointer); CC=... overrides.
ifeq ($(origin CC),default)
CC      := clang
endif
endif

CFLAGS  := -std=c11 -O2 -g -Wall -Wextra -Werror -Wno-unknown-pragmas -D_GNU_SOURCE \
           -Iengine -Ivis -I/usr/include/stb $(EXTRA_CFLAGS)
CC_IS_CLANG := $(findstring clang,$(shell $(CC) --version 2>/dev/null | head -n 1))
# gcc's -O2 vectorises only loops whose trip count needs no remainder; the engine's elementwise
# loops (epilogues, im2col rows, pooling) have arbitrary lengths. (clang's -O2 does this already.)
ifeq ($(CC_IS_CLANG),)
CFLAGS  += -fvect-cost-model=dynamic
endif
LDLIBS  := -lstb -lm -lpthread
ifeq ($(OPENMP),1)
CFLAGS  += -fopenmp
LDLIBS  += -fopenmp
endif
ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDLIBS  += -fsanitize=address,undefined
# clang cannot vectorise some `omp simd` loops once they are instrumented, and says so
ifneq ($(CC_IS_CLANG),)
CFLAGS  += -Wno-pass-failed
endif
endif

ENGINE_SRC := $(sort $(wildcard engine/*.c engine/ops/*.c engine/kernels/*.c))
VIS_SRC    := $(sort $(wildcard vis/*.c))
CLI_SRC    := $(sort $(wildcard cli/*.c))
TEST_SRC   := $(sort $(wildcard tests/c/test_*.c))
TOOL_SRC   := $(sort $(wildcard tests/c/tool_*.c))
BENCH_SRC  := $(sort $(wildcard bench/*.c))

LIB_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(ENGINE_SRC) $(VIS_SRC))
# The report's CSS and JS (vis/report_assets/) as C strings in the library (vis/report.h).
REPORT_ASSETS := vis/report_assets/report.css vis/report_assets/report.js
LIB_OBJ  += $(BUILD)/obj/gen/report_assets.o
CLI_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(CLI_SRC))
TEST_BIN := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(TEST_SRC))
# Helper programs the script tests drive (e.g. tool_preprocess for test_image_pil.py).
TOOL_BIN := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(TOOL_SRC))
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all test demo clean setup bench
all: $(BUILD)/cnnscope $(BUILD)/libcnnscope.a $(TEST_BIN) $(TOOL_BIN) $(BENCH_BIN)

$(BUILD)/obj/%.o: %.c $(wildcard engine/*.h engine/ops/*.h engine/kernels/*.h vis/*.h cli/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# SIMD micro-kernels (engine/kernels/, one ISA per file): only these files get ISA flags, and
# engine/kernels/dispatch.c calls them only on a CPU that has the ISA. Elsewhere (aarch64) the
# x86 files compile to nothing and the NEON files need no flag.
ifneq ($(filter x86_64%,$(shell $(CC) -dumpmachine)),)
$(BUILD)/obj/engine/kernels/%-avx2.o: CFLAGS += -mavx2 -mfma
$(BUILD)/obj/engine/kernels/%-avx512.o: CFLAGS += -mavx512f
$(BUILD)/obj/engine/kernels/%-pclmul.o: CFLAGS += -mpclmul
$(BUILD)/obj/engine/kernels/%-vpclmul.o: CFLAGS += -mavx2 -mvpclmulqdq -mpclmul
endif

# tools/embed runs on the build machine, so it is built with the host's compiler and no
# sanitizer or cross flags; the generated file is compiled like any library source.
HOSTCC ?= cc
$(BUILD)/tools/embed: tools/embed.c
	@mkdir -p $(dir $@)
	$(HOSTCC) -std=c11 -O2 -Wall -Wextra -Werror -o $@ $<

$(BUILD)/gen/report_assets.c: $(BUILD)/tools/embed $(REPORT_ASSETS)
	@mkdir -p $(dir $@)
	$(BUILD)/tools/embed --include report.h report_asset_css vis/report_assets/report.css \
	    report_asset_js vis/report_assets/report.js > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/report_assets.o: $(BUILD)/gen/report_assets.c vis/report.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libcnnscope.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/cnnscope: $(CLI_OBJ) $(BUILD)/libcnnscope.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libcnnscope.a $(LDLIBS)

$(BUILD)/tests/%: tests/c/%.c $(BUILD)/libcnnscope.a $(wildcard tests/c/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/c -o $@ $< $(BUILD)/libcnnscope.a $(LDLIBS)

# Installs the Debian packages the build, the tests and the demo need (once; then a no-op).
setup:
	@bash scripts/setup.sh

# Benchmarks (bench/*.c): built by `make` so they keep compiling; run them by hand. `make bench`
# also runs bench/compare.py: cnnscope against ONNX Runtime and PyTorch on this machine
# (BENCH_ARGS="--quick" for a smoke run).
bench: $(BUILD)/cnnscope $(BENCH_BIN)
	BUILD=$(BUILD) CC="$(CC)" $(PYTHON) bench/compare.py $(BENCH_ARGS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libcnnscope.a $(wildcard bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libcnnscope.a $(LDLIBS)

# The builds inside test and demo use every core, unless make was started with -j already.
SUBMAKE_JOBS = $(if $(findstring jobserver,$(MAKEFLAGS)),,-j$(shell nproc 2>/dev/null || echo 2))

# The whole suite: C unit tests, then the end-to-end scripts (they need PyTorch for references).
# Then, unless SANITIZE=1 asked for that run alone, the whole suite again on the
# AddressSanitizer + UndefinedBehaviorSanitizer build (build-san/) in quick mode: smaller
# inputs, the same kind of assertions (tests/run_all.sh).
test: setup
	$(MAKE) $(SUBMAKE_JOBS) all
	BUILD=$(BUILD) PYTHON=$(PYTHON) bash tests/run_all.sh
ifneq ($(SANITIZE),1)
	$(MAKE) $(SUBMAKE_JOBS) SANITIZE=1 all
	BUILD=build-san PYTHON=$(PYTHON) bash tests/run_all.sh
endif

demo: setup
	$(MAKE) $(SUBMAKE_JOBS) all
	BUILD=$(BUILD) PYTHON=$(PYTHON) bash scripts/demo.sh

# Fuzzing (tests/fuzz/README.md): libFuzzer harnesses built with clang, ASan and UBSan, no
# OpenMP, in build-fuzz/; each runs FUZZ_SECONDS on a corpus seeded from real files.
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_BIN     := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
.PHONY: fuzz fuzz-build FORCE

fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_BUILD=$(FUZZ_BUILD) PYTHON=$(PYTHON) bash tests/fuzz/run.sh

fuzz-build: $(FUZZ_BIN)

# The engine instrumented for coverage (fuzzer-no-link); the sub-make (where BUILD is
# FUZZ_BUILD, so the ordinary library rule applies) knows when it is current.
ifneq ($(BUILD),$(FUZZ_BUILD))
$(FUZZ_BUILD)/libcnnscope.a: FORCE
	$(MAKE) --no-print-directory CC=clang OPENMP=0 BUILD=$(FUZZ_BUILD) \
	    EXTRA_CFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" $@
endif

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/libcnnscope.a
	clang -std=c11 -O1 -g -Wall -Wextra -Werror -D_GNU_SOURCE -Iengine -fsanitize=fuzzer $(FUZZ_SAN) \
	    -o $@ $< $(FUZZ_BUILD)/libcnnscope.a -lstb -lm -lpthread

FORCE:

clean:
	rm -rf build build-san build-fuzz
