#!/usr/bin/env bash
# Passive-target progress on the system's Open MPI (Debian's openmpi-bin 4.1.4 here): `make test-progress`.
#
#   benchmarks/progress_matrix.sh test   VENV   # the no-wait test under osc ucx and pt2pt, progress off / thread
#   benchmarks/progress_matrix.sh doctor VENV   # `hpcasync doctor` under osc rdma, sm, ucx, pt2pt
#
# VENV has mpi4py built against the mpicc on the PATH (the Makefile builds it). "test" fails unless
# the no-wait test fails with mpi.progress = "off" (it waits) and passes with "thread", under both
# components: that is what the progress thread is for. Open MPI 4.1's osc pt2pt
# refuses MPI_THREAD_MULTIPLE (no window can be created), so under pt2pt the ranks ask for
# MPI_THREAD_SERIALIZED (MPI4PY_RC_THREAD_LEVEL=serialized), the level the progress thread also supports.
set -u
what=${1:?test or doctor}
venv=${2:?venv}
py="$venv/bin/python"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 MPLBACKEND=Agg
# Open MPI refuses root without these; harmless otherwise
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun_=(mpirun --oversubscribe -n 2)
level_for() { [ "$1" = pt2pt ] && echo serialized || echo multiple; }
"$py" -c "from mpi4py import MPI; v = MPI.Get_library_version(); assert 'Open MPI' in v, v" || {
  echo "progress_matrix: $venv's mpi4py is not built against Open MPI" >&2; exit 2; }

if [ "$what" = test ]; then
  status=0
  for osc in ucx pt2pt; do
    for mode in off thread; do
      out=$("${mpirun_[@]}" --mca osc "$osc" -x HPCASYNC_TEST_PROGRESS="$mode" \
            -x MPI4PY_RC_THREAD_LEVEL="$(level_for "$osc")" timeout 300 "$py" -m pytest -q -s \
            --with-mpi -p no:cacheprovider tests/mpi/test_windows.py -k do_not_wait 2>&1)
      rc=$?
      timing=$(printf '%s\n' "$out" | grep -o '20 publishes: [^;]*' | head -1)
      if [ "$mode" = off ]; then want=fail; [ $rc -ne 0 ] && got=fail || got=pass
      else want=pass; [ $rc -eq 0 ] && got=pass || got=fail; fi
      printf 'osc %-6s %-10s mpi.progress=%-7s no-wait test %s (expected %s)  %s\n' "$osc" "$(level_for "$osc")" "$mode" "$got" "$want" "$timing"
      if [ "$got" != "$want" ]; then status=1; printf '%s\n' "$out" | tail -20; fi
    done
  done
  exit $status
fi

if [ "$what" = doctor ]; then
  for osc in rdma sm ucx pt2pt; do
    for level in multiple serialized; do
      echo "== --mca osc $osc, MPI4PY_RC_THREAD_LEVEL=$level"
      "${mpirun_[@]}" --mca osc "$osc" -x MPI4PY_RC_THREAD_LEVEL="$level" timeout 300 "$venv/bin/hpcasync" doctor \
        2>&1 | grep -v '^\s*$'
    done
  done
  exit 0
fi
echo "progress_matrix: unknown mode $what (test or doctor)" >&2
exit 2
