"""Time until the average model's training loss is ≤ L, for the push-sum experiments (docs/reproduction.md).

    python benchmarks/pushsum_time_to_loss.py runs/pushsum/ring16 runs/pushsum/exp16 --loss 0.6 0.4

Prints one Markdown row per run: name, topology, gradients, time to each loss
target (virtual time units; "not reached" within the budget), and the ratio to
ADSGD's time on the same topology family. Never asserts.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hpcasync.results.metrics import time_to_loss, total_gradients
from hpcasync.results.reader import open_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--loss", nargs="+", type=float, default=[0.6])
    args = p.parse_args()
    rows = []
    for d in args.dirs:
        for run_h5 in sorted(d.glob("*/run.h5")):
            run = open_run(run_h5.parent)
            ev = run.evaluations
            times = [time_to_loss(ev["virtual_time"], ev["train_loss"], L) for L in args.loss]
            rows.append((run_h5.parent.name, run.config["topology"]["name"], total_gradients(run), times))
    ref = {r[1]: r[3] for r in rows if r[0].split("-")[0] == "adsgd"}
    print("| run | topology | gradients | " + " | ".join(f"time to loss ≤ {L:g} (÷ ADSGD)" for L in args.loss) + " |")
    print("|---|---|---|" + "---|" * len(args.loss))
    for name, topo, grads, times in rows:
        base = ref.get(topo) or ref.get(topo.replace("time-varying-", "")) or [math.nan] * len(times)
        cells = []
        for t, b in zip(times, base, strict=True):
            if t is None or not math.isfinite(t):
                cells.append("not reached")
            else:
                cells.append(f"{t:.0f} ({t / b:.2f})" if b and math.isfinite(b) else f"{t:.0f}")
        print(f"| {name} | {topo} | {grads} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
