# hpcasync: `make demo` runs the main job on the embedded digits data, `make test` runs the whole suite.
# Both build .venv from a bare Python first. On a cluster, install into your own environment instead
# (pip install -e . with mpi4py built against the system MPI) and call `hpcasync` directly.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the venv's mpiexec comes from the `mpich` wheel (dev extra); override with MPIEXEC=srun etc.
MPIEXEC ?= $(BIN)/mpiexec
NP_TEST ?= 4
# ranks outnumber cores here: one thread per rank (DESIGN §5)
export OMP_NUM_THREADS=1
export OPENBLAS_NUM_THREADS=1
export MKL_NUM_THREADS=1
export NUMBA_NUM_THREADS=1
export MPLBACKEND=Agg

.PHONY: install install-dev install-torch demo demo-sim test lint bench reproduce clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[mpich]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# torch is an optional extra; pinned so pip takes the CPU wheel instead of several GB of CUDA packages
$(VENV)/.installed-torch: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	touch $@

install-torch: $(VENV)/.installed-torch

DEMO_OUT ?= runs/demo
DEMO_RANKS ?= 10
# seed 000 case 5 on MPI: 9 agents (3x3 grid) + 1 monitor rank, 40 s each, then the report (~3 min on 2 cores)
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

# the torch tests (tests/test_torch_*.py, tests/mpi/test_float32.py) need the pinned CPU wheel
test: $(VENV)/.installed-dev $(VENV)/.installed-torch
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests
	$(MPIEXEC) -n $(NP_TEST) $(BIN)/python -m pytest -q --with-mpi -p no:cacheprovider tests/mpi

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_kernels.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_sim.py

clean:
	rm -rf $(VENV) runs build *.egg-info

# `make reproduce`: seed 000's experiments in the simulator on the digits data, from scratch
# (configs/seed000/*.toml: 149 runs), then the figures and tables of docs/reproduction.md, copied
# into docs/figures/. Simulator only; about half an hour on 2 cores (docs/figures/wall_time.txt).
REPRO_OUT ?= runs/seed000
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
	  $(BIN)/hpcasync sweep configs/seed000/$$s.toml --out $(REPRO_OUT)/$$(echo $$s | sed 's/_scaling//') \
	    || exit $$?; \
	done; \
	for pair in $(REPRO_COPY); do cp $(REPRO_OUT)/$${pair%%:*} $(REPRO_DOC)/$${pair##*:} || exit $$?; done; \
	secs=$$(( $$(date +%s) - start )); \
	echo "make reproduce: $$secs s wall ($$(( secs / 60 )) min $$(( secs % 60 )) s), $$(getconf _NPROCESSORS_ONLN) cores," \
	  "load average at the end $$(cut -d' ' -f1-3 /proc/loadavg), $$(date -u +%F)" \
	  | tee $(REPRO_DOC)/wall_time.txt

# `make reproduce-mpi` (optional): the ring-scaling runs on MPI, 1 to 16 agents (configs/seed000/mpi_ring.toml)
.PHONY: reproduce-mpi
reproduce-mpi: $(VENV)/.installed
	rm -rf $(REPRO_OUT)/mpi_ring
	$(BIN)/hpcasync sweep configs/seed000/mpi_ring.toml --out $(REPRO_OUT)/mpi_ring
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
