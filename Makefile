# Thin wrapper over CMake/CTest: the README's two commands.
#   make run    install what is missing, build, train the default model if there is none, run it
#   make test   install what is missing, build (plain, ASan+UBSan, TSan), run every test
#   make reproduce [ARGS=--quick]   run the seed report's experiments and write reports/<name>/report.md
.PHONY: all run test test-tsan deps build build-asan reproduce clean

JOBS ?= $(shell nproc)
# Debian's Python, which has torch, sklearn and matplotlib (the python3 first on PATH may not).
PYTHON ?= /usr/bin/python3
BUILD ?= build
CMAKE_FLAGS ?=

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DLOUPE_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLOUPE_ASAN=ON -DLOUPE_WITH_TORCH=OFF -DLOUPE_WERROR=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)

test: build build-asan
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -L sanitize
	JOBS=$(JOBS) scripts/test-tsan.sh $(BUILD)

# ThreadSanitizer over the work queue and the daemon's concurrent paths (needs the main tests' store).
test-tsan: build
	JOBS=$(JOBS) scripts/test-tsan.sh $(BUILD)

run: build
	@scripts/run-default.sh $(BUILD)

reproduce: build
	$(PYTHON) training/reproduce.py --loupe $(BUILD)/cli/loupe $(ARGS)

clean:
	rm -rf $(BUILD) build-asan build-tsan
