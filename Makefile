# Thin wrapper over CMake. `make run` and `make test` are the two commands of the README.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CNNKIT_CUDA ?= AUTO

.PHONY: all configure build test test-asan test-emu test-gpu run bench bench-train gpu-bundle install install-check clean deps deps-check format fuzz valgrind keras-check

all: build

deps:
	@bash tools/install_deps.sh

configure:
	@cmake -S . -B $(BUILD) -DCNNKIT_CUDA=$(CNNKIT_CUDA) $(CMAKE_FLAGS) > $(BUILD).configure.log 2>&1 \
	  || { cat $(BUILD).configure.log; exit 1; }
	@grep -E "cnnkit:" $(BUILD).configure.log || true

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The file call graph of src/host (nm on the objects) must have no circle: tools/deps.py.
deps-check: build
	@python3 tools/deps.py -q $(BUILD)

test: build
	@$(BUILD)/tests/cnnkit_tests --jobs $(JOBS) $(TEST_ARGS)

# The CPU suite again under AddressSanitizer + UndefinedBehaviorSanitizer (CPU-only build).
ASAN_BUILD ?= build-asan
test-asan:
	@cmake -S . -B $(ASAN_BUILD) -DCNNKIT_CUDA=OFF -DCNNKIT_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_C_FLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  > $(ASAN_BUILD).configure.log 2>&1 || { cat $(ASAN_BUILD).configure.log; exit 1; }
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/.ci/lsan.supp UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(ASAN_BUILD)/tests/cnnkit_tests --jobs $(JOBS) $(TEST_ARGS)

# The GPU tests without a GPU: the GPU path built against kemu, a CPU emulation of the CUDA
# runtime, cuDNN, cuBLAS and a one-rank NCCL (tests/kemu/kemu.h). It finds logic errors in the GPU
# code (indices, pointers, copies, API misuse; races with EMU_TSAN=1 below); a real GPU is still
# the only test of the real cuDNN, cuBLAS and NCCL, of weak memory ordering, and of speed
# (README, "GPU tests without a GPU"). EMU_ASAN=1: the same under AddressSanitizer + UBSan (its
# own build folder; several times slower).
# KEMU_PROTECT=1 (not under ASan, which needs its own allocations): host code that touches device
# memory directly stops, as it would fault on a GPU.
# EMU_TSAN=1: a race checker. The same under ThreadSanitizer (its own build folder): each GPU thread
# is a TSan fiber, ordered only by what CUDA orders (launch, __syncthreads, kernel end, stream
# order, events, host synchronization), so a missing barrier, two threads or blocks writing one
# element, or work on two streams touching one buffer without an event is reported and fails
# the test (kemu_rt.cpp, README). kemu_race_selftest first shows each kind of race reported.
ifeq ($(EMU_ASAN),1)
EMU_BUILD ?= build-emu-asan
EMU_SAN = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
EMU_CMAKE_FLAGS += -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS="$(EMU_SAN)" -DCMAKE_CXX_FLAGS="$(EMU_SAN)"
EMU_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/.ci/lsan.supp \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else ifeq ($(EMU_TSAN),1)
EMU_BUILD ?= build-emu-tsan
EMU_SAN = -g -fsanitize=thread
# MPI off: TSan reports OpenMPI's own locks (a lock-order inversion in mca_btl_tcp), so the
# tests of several processes stay in the plain and ASan runs.
EMU_CMAKE_FLAGS += -DCNNKIT_EMU_TSAN=ON -DCMAKE_C_FLAGS="$(EMU_SAN)" -DCMAKE_CXX_FLAGS="$(EMU_SAN)" \
  -DCNNKIT_MPI=OFF
EMU_ENV = TSAN_OPTIONS="halt_on_error=1 exitcode=66 $(TSAN_OPTIONS)" KEMU_PROTECT=1
EMU_SELFTESTS = kemu_race_selftest
# Without the tests that train for many steps (CUDA graphs, whole models: 21 of 118 GPU tests, 330
# of their 378 s unsanitized; about 20 times slower here); the rest and bench_ops below reach the
# kernel launches all of them reach, the same ones with more than one block and warp (README).
EMU_FILTER ?= @(gpu/*|gpu_bf16/!(graph_steps_equal_eager_steps|seed_model_matches_cpu_twin)|gpu_layers/*|gpu_comm/*|*/gpu_!(resnet20_matches_cpu|roofline_every_node)|ops/*|*/*_cuda|errors/workspace_too_small_on_gpu|hardening/!(same_seed_bit_identical_weights)_gpu)
EMU_BENCH_REPEATS = 1
else
EMU_ENV = KEMU_PROTECT=1
endif
EMU_BUILD ?= build-emu
EMU_BENCH_REPEATS ?= 2
# gpu_comm's NCCL tests run on kemu's NCCL (tests/kemu/kemu_nccl.cpp): one rank, and two ranks
# in two processes under mpiexec when MPI is built.
EMU_FILTER ?= @(gpu/*|gpu_@(bf16|graph|layers|model)/*|gpu_comm/*|*/gpu_*|ops/*|*/*_cuda|errors/workspace_too_small_on_gpu|hardening/*_gpu)
# Then bench_ops at the model's shapes: every op table case on the device, re-checked against
# the CPU after timing (the timings mean nothing here; a failed row fails the target).
test-emu:
	@cmake -S . -B $(EMU_BUILD) -DCNNKIT_EMU=ON -DCNNKIT_BUILD_BENCH=ON -DCNNKIT_NCCL=ON -DCNNKIT_MPI=AUTO \
	  $(EMU_CMAKE_FLAGS) > $(EMU_BUILD).configure.log 2>&1 || { cat $(EMU_BUILD).configure.log; exit 1; }
	@cmake --build $(EMU_BUILD) -j $(JOBS) --target cnnkit_tests kemu_fakes_selftest kemu_rt_selftest bench_ops $(EMU_SELFTESTS)
	@$(EMU_ENV) $(EMU_BUILD)/tests/kemu/kemu_rt_selftest
	@$(foreach t,$(EMU_SELFTESTS),$(EMU_ENV) $(EMU_BUILD)/tests/kemu/$(t) &&) true
	@$(EMU_ENV) $(EMU_BUILD)/tests/kemu/kemu_fakes_selftest
	@$(EMU_ENV) CNNKIT_REQUIRE_GPU=1 OMP_NUM_THREADS=1 $(EMU_BUILD)/tests/cnnkit_tests --jobs $(JOBS) --filter '$(EMU_FILTER)' $(TEST_ARGS)
	@$(EMU_ENV) OMP_NUM_THREADS=1 $(EMU_BUILD)/bench/bench_ops --bench-sizes --repeats $(EMU_BENCH_REPEATS) --csv \
	  > $(EMU_BUILD)/bench_ops.csv

# On a GPU host with the CUDA toolkit (GPU CI: .github/workflows/gpu.yml): the suite with
# CNNKIT_REQUIRE_GPU=1 (a GPU test that cannot run fails instead of skipping), then
# compute-sanitizer memcheck, racecheck, initcheck and synccheck on the GPU kernel tests and on a
# 20-step GPU training of the seed model. Logs and summary.json in $(BUILD)/test-gpu.
test-gpu: build
	@bash tools/bundle_run.sh $(BUILD)/test-gpu --ci --build $(BUILD)

# libFuzzer targets for the parsers (Keras text, IDX, CIFAR-10, checkpoints): clang, ASan+UBSan,
# a standalone CMake project in fuzz/ (the normal build is untouched). FUZZ_SECONDS per target.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz:
	@cmake -S fuzz -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang > $(FUZZ_BUILD).configure.log 2>&1 \
	  || { cat $(FUZZ_BUILD).configure.log; exit 1; }
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@bash fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# valgrind memcheck on a short `cnnkit train` of the seed model (no errors, no definite leaks).
valgrind: build
	@bash .ci/valgrind-smoke.sh $(BUILD)

# The live cross-check against real Keras (a venv from PyPI in build/keras-venv; skips without).
keras-check: build
	@bash tools/keras_crosscheck.sh $(BUILD)

bench: build
	@$(BUILD)/bench/bench_ops $(BENCH_ARGS)

# Trains the question's model on Fashion-MNIST: on the GPU when one is present (10 epochs, the
# issue's setting), else on the CPU: 2 epochs of the full data, a few minutes on 2 cores
# (RUN_ARGS="--epochs 10" for the full run there).
HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
RUN_ARGS ?= $(if $(HAVE_GPU),--epochs 10,--epochs 2)
run: deps build
	@$(BUILD)/cnnkit train examples/seed_cnn.py --batch 128 --seed 1 $(RUN_ARGS) \
	  --save $(BUILD)/seed_cnn.ckpt --log $(BUILD)/seed_cnn.csv --plot $(BUILD)/seed_cnn.svg

# cnnkit, PyTorch (python3-torch) and Keras (the venv of tools/keras_venv.sh) one after the other,
# then the ratios (bench/compare.py); a peer that cannot run is named and left out
bench-train: build
	@KPY=$$(bash tools/keras_venv.sh 2>/dev/null) || KPY=python3; \
	  python3 bench/compare.py --run --bench-train $(BUILD)/bench/bench_train --python /usr/bin/python3 \
	  --keras-python "$$KPY" --threads $(JOBS) $(foreach a,$(BENCH_ARGS),--bench-arg=$(a))

# The binaries, the .so files they need and run.sh for a GPU host without cnnkit's build
# dependencies (BUNDLE_DATA=1: with Fashion-MNIST); docs/gpu-runbook.md runs it.
gpu-bundle: build
	@bash tools/gpu_bundle.sh $(BUILD) gpu-bundle

install: build
	@cmake --install $(BUILD) $(if $(PREFIX),--prefix $(PREFIX),)

# A downstream program linked against the installed library four ways (pkg-config shared and
# --static, find_package's shared and static targets), run; only ck_* exported.
install-check: build
	@bash tools/install_check.sh $(BUILD)

format:
	@clang-format -i include/cnnkit/*.h $$(find src/host -name '*.[ch]') src/cli/*.[ch] src/kernels/*.cu src/kernels/*.h tests/*.[ch] tests/ops/*.[ch] \
	  tests/reference/*.[ch] bench/*.[ch]

clean:
	@rm -rf $(BUILD) $(BUILD).configure.log $(ASAN_BUILD) $(ASAN_BUILD).configure.log gpu-bundle \
	  gpu-bundle.tar.xz
