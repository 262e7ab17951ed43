"""Write configs/digits-grid/case{1..5}-{algorithm}.toml: Zhou & Pu's (2025) 9-agent setting on digits.

3×3 grid, Metropolis–Hastings weights, non-convex softmax regression
(λ = 1e-4), batch 32, α = 0.01 for every algorithm, delay cases 1–5 with
agent 4 (the centre of the grid) as the straggler. Run it again after
editing the template below.
"""

from pathlib import Path

TEMPLATE = """\
# Zhou & Pu 2025 §5 on the embedded digits data: case {case} ({label}), {algorithm}
[run]
name = "case{case}-{algorithm}"
seed = 0
out = "runs/digits-grid"

[algorithm]
name = "{algorithm}"
alpha = 0.01
batch_size = 32

[topology]
name = "grid"
n = 9
shape = [3, 3]
weights = "metropolis"

[data]
name = "digits"
partition = "iid"

[problem]
name = "softmax"
lam = 1e-4

[delays]
model = "case"
case = {case}
straggler = 4

[budget]
time = {budget}

[eval]
interval = {interval}
target_accuracy = 0.9
"""

LABELS = {1: "base", 2: "slow communication", 3: "computation straggler",
          4: "communication straggler", 5: "combined straggler"}
ALGORITHMS = ("adsgd", "adsgd-delta", "dsgd", "allreduce")
BUDGET, INTERVAL = 10000, 50

if __name__ == "__main__":
    out = Path(__file__).parent / "digits-grid"
    out.mkdir(exist_ok=True)
    for case, label in LABELS.items():
        for algorithm in ALGORITHMS:
            text = TEMPLATE.format(case=case, label=label, algorithm=algorithm, budget=BUDGET, interval=INTERVAL)
            (out / f"case{case}-{algorithm}.toml").write_text(text)
