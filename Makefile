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

.PHONY: install install-dev demo demo-sim test lint bench reproduce clean

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
install-torch: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet "torch==2.13.0"

DEMO_OUT ?= runs/demo
demo: $(VENV)/.installed
	@rm -rf $(DEMO_OUT)
	@for alg in adsgd adsgd-delta dsgd allreduce; do \
	  $(BIN)/hpcasync simulate configs/digits-grid/case5-$$alg.toml --out $(DEMO_OUT)/$$alg || exit $$?; \
	done
	$(BIN)/hpcasync report $(DEMO_OUT)/adsgd $(DEMO_OUT)/adsgd-delta $(DEMO_OUT)/dsgd $(DEMO_OUT)/allreduce \
	  --out $(DEMO_OUT)/report --target 0.9

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests
	$(MPIEXEC) -n $(NP_TEST) $(BIN)/python -m pytest -q --with-mpi -p no:cacheprovider tests/mpi

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_kernels.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_sim.py

clean:
	rm -rf $(VENV) runs build *.egg-info
