"""``mpi.shared_memory``: the config field that picks the same-node push path (shared_slots.py)."""

from __future__ import annotations

import pytest

from hpcasync.config import from_dict, validate
from hpcasync.errors import UserError


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_shared_memory_modes_are_accepted(mode: str) -> None:
    cfg = from_dict({"mpi": {"shared_memory": mode}})
    validate(cfg)
    assert cfg.mpi.shared_memory == mode


def test_shared_memory_default_is_auto() -> None:
    assert from_dict({}).mpi.shared_memory == "auto"


@pytest.mark.parametrize("bad", ["on", "yes", "", "AUTO"])
def test_bad_shared_memory_is_a_user_error_naming_the_field(bad: str) -> None:
    with pytest.raises(UserError, match="mpi.shared_memory"):
        validate(from_dict({"mpi": {"shared_memory": bad}}))
