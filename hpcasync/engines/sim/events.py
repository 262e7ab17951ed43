"""The simulator's event kinds and their order at equal times (docs/design.md §6)."""

from __future__ import annotations

RESUME, DELIVER, PAIR, EVAL, SERVE, SETTLED, GROUP = 0, 1, 2, 3, 4, 5, 6
# priority at equal times: agents resume, then messages (and gradients at the server) land, then settled
# agents resume, then evaluations
PRIORITY = (0, 1, 1, 2, 1, 1.5, 1)
