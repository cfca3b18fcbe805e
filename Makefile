# Thin wrapper over CMake/CTest: the README's two commands.
#   make run    install what is missing, build, serve the store; train the MLP, then a CNN in the background, if missing
#   make test   install what is missing, build (plain, ASan+UBSan, TSan, fuzz), run every test, build and run the slim image
#   make reproduce [ARGS=--quick]   run the seed report's experiments and write reports/<name>/report.md
#   make sanity [SANITY_ARGS=...]  the explanation methods' sanity check into docs/explanations.md
#   make fuzz [FUZZ_SECONDS=600]    build the libFuzzer targets with clang (build-fuzz) and fuzz each that long
#   make install [PREFIX=/usr/local]  bin/loupe, share/loupe/{static,docs,training}
#   make screenshots                the page's screenshots (tiny MLP and CNN) into docs/img/ for the README
#   make image [TARGET=default|slim|trainer] [TAG=...]   build the Dockerfile (docker, else podman)
#   make image-test [TARGET=default]  build the image and run it as a container runtime would (scripts/test-image.sh)
.PHONY: all run test test-tsan test-fuzz fuzz deps build build-asan reproduce sanity clean install image image-test screenshots

JOBS ?= $(shell nproc)
# Debian's Python, which has torch, sklearn and matplotlib (the python3 first on PATH may not).
PYTHON ?= /usr/bin/python3
BUILD ?= build
CMAKE_FLAGS ?=
# No "gmake[N]: Entering directory" lines from the sub-makes CMake runs.
MAKEFLAGS += --no-print-directory

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DLOUPE_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLOUPE_ASAN=ON -DLOUPE_WITH_TORCH=ON -DLOUPE_WERROR=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)

test: build build-asan
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -L sanitize
	JOBS=$(JOBS) scripts/test-tsan.sh $(BUILD)
	JOBS=$(JOBS) scripts/test-fuzz.sh
	scripts/test-image.sh slim

# ThreadSanitizer over the work queue and the daemon's concurrent paths (needs the main tests' store).
test-tsan: build
	JOBS=$(JOBS) scripts/test-tsan.sh $(BUILD)

# Every libFuzzer target replays its corpus and fuzzes for 20 s (part of `make test`).
test-fuzz: deps
	JOBS=$(JOBS) scripts/test-fuzz.sh

# Fuzz each target for FUZZ_SECONDS (tests/fuzz/README.md); the corpora grow in build-fuzz/fuzz-work.
FUZZ_SECONDS ?= 600
fuzz: deps
	JOBS=$(JOBS) FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

# Quiet: the build's output goes to $(BUILD)/build.log (its tail is shown when it fails).
run: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DLOUPE_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@echo "make run: building in $(BUILD)/ (a few minutes the first time; log: $(BUILD)/build.log)"
	@cmake --build $(BUILD) -j $(JOBS) >$(BUILD)/build.log 2>&1 || { tail -n 30 $(BUILD)/build.log; exit 1; }
	@scripts/run-default.sh $(BUILD)

reproduce: build
	$(PYTHON) training/reproduce.py --loupe $(BUILD)/cli/loupe $(ARGS)

# The explanation methods' sanity check (cascading randomisation; docs/explanations.md) on the
# default VGG (VGG16-BN at width 1/4, `loupe train-vgg`'s default recipe: 24 epochs or 18 minutes
# on a CPU) and the default MLP (relu, 20 epochs, as `make run` trains it), each trained first
# when missing; rewrites the generated part of docs/explanations.md and docs/img/sanity_*.
MODELS ?= models
SANITY_ARGS ?=
sanity: build
	@test -f $(MODELS)/mlp-relu/weights.safetensors || \
	  $(BUILD)/cli/loupe train-mlp --activation relu --epochs 20 --out $(MODELS)/mlp-relu
	@test -f $(MODELS)/vgg16-w25/checkpoint.pt || \
	  $(BUILD)/cli/loupe train-vgg --out $(MODELS)/vgg16-w25 --quiet
	$(BUILD)/cli/loupe sanity-check --cnn $(MODELS)/vgg16-w25 --mlp $(MODELS)/mlp-relu \
	  --out docs/img --doc docs/explanations.md $(SANITY_ARGS)

# The e2e test's run (tests/e2e/run_e2e.py) with a CNN trained longer than the test's (a few
# minutes), so that its filters show more than noise; the screenshots the README shows are copied
# to docs/img/. `make test` never writes into the source tree.
SCREENSHOT_CNN ?= --width 0.125 --epochs 1 --train-subset 4000 --val-subset 500 --test-subset 1000 --quiet
screenshots: build
	@cd $(BUILD) && ctest -R e2e_npm_ci --output-on-failure >/dev/null
	@rm -rf $(BUILD)/screenshots && mkdir -p docs/img
	LOUPE_BIN=$(abspath $(BUILD))/cli/loupe NODE_PATH=$(abspath $(BUILD))/tests/e2e/node_modules \
	  LOUPE_SCREENSHOTS=$(abspath $(BUILD))/screenshots LOUPE_E2E_CNN_TRAIN="$(SCREENSHOT_CNN)" $(PYTHON) tests/e2e/run_e2e.py
	cp $(addprefix $(BUILD)/screenshots/,explore.png explore-cnn.png explore-compare.png training.png reports.png) docs/img/

PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# The Dockerfile's targets: default (libtorch), slim (MLPs only), trainer (Python and torch).
TARGET ?= default
TAG ?= localhost/loupe:$(TARGET)
image:
	@scripts/build-image.sh $(TARGET) $(TAG)

image-test:
	scripts/test-image.sh $(TARGET) $(TAG)

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
