#!/bin/sh
# Xiong et al. 2023's straggler experiments in the simulator (docs/reproduction.md, "DSGD-AAU's straggler
# experiments"). Two runs at a time; smallest n first. Run from the repository root with the venv's hpcasync.
set -e
HP=${HPCASYNC:-.venv/bin/hpcasync}
PY=${PYTHON:-.venv/bin/python}
D=configs/dsgd-aau-2023
for n in 32 64 128 256; do
    $HP sweep $D/sweep.toml --only "*-n$n-*" --no-report
    $HP sweep $D/adpsgd.toml --only "*-n$n-*" --no-report
done
# analysis (tables + figures):
$PY $D/analyze.py runs/dsgd-aau-2023 --out docs/figures
