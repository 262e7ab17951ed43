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
    $HP sweep $D/prague.toml --only "*-n$n-*" --no-report
done
# analysis (tables + figures):
$PY $D/analyze.py runs/dsgd-aau-2023 --out docs/figures
# step-size ablation (alpha = 0.1, the paper's eta_0), 64 and 128 workers:
$HP sweep $D/alpha.toml --no-report
$HP sweep $D/alpha_adpsgd.toml --no-report
$PY $D/analyze.py runs/dsgd-aau-2023-alpha --out docs/figures --name dsgd_aau_2023_alpha0.1 --at 100 --loss-at 500 --target 1.0
rm -f docs/figures/dsgd_aau_2023_alpha0.1_loss_time.png docs/figures/dsgd_aau_2023_alpha0.1_speedup.png  # only loss_iter is shown
# the "sleep" straggler variant (a straggler sleeps 6 mean computation times), 32 and 128 workers:
$HP sweep $D/sleep.toml --no-report
$HP sweep $D/sleep_adpsgd.toml --no-report
$PY $D/analyze.py runs/dsgd-aau-2023-sleep --out docs/figures --name dsgd_aau_2023_sleep
rm -f docs/figures/dsgd_aau_2023_sleep_loss_iter.png docs/figures/dsgd_aau_2023_sleep_speedup.png
# the 2-NN (torch MLP) instead of softmax regression, alpha = 0.1, 32 and 128 workers:
$HP sweep $D/mlp.toml --no-report
$HP sweep $D/mlp_adpsgd.toml --no-report
$PY $D/analyze.py runs/dsgd-aau-2023-mlp --out docs/figures --name dsgd_aau_2023_mlp --at 100 --loss-at 500 --target 0.5
rm -f docs/figures/dsgd_aau_2023_mlp_loss_iter.png docs/figures/dsgd_aau_2023_mlp_speedup.png
# ResNet-18 (torch) instead of softmax regression, alpha = 0.1, 32 workers, 200 units, one run at a time (~11 GB each):
$HP sweep $D/resnet18.toml --no-report
$HP sweep $D/resnet18_adpsgd.toml --no-report
$PY $D/analyze.py runs/dsgd-aau-2023-resnet18 --out docs/figures --name dsgd_aau_2023_resnet18 --at 100 --loss-at 200 --target 1.0 --plot-n 32
rm -f docs/figures/dsgd_aau_2023_resnet18_loss_iter.png docs/figures/dsgd_aau_2023_resnet18_speedup.png
