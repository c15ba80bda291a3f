"""Waiting for the live services: they apply events asynchronously, so a test asks again until
what it expects holds, and fails with a clear message when it never does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


# Any, not a type variable: checks are often `a and b and value` chains, whose union type is
# no help to the test that reads the value.
def eventually(check: Callable[..., Any], within: float = 20.0, every: float = 0.2) -> Any:
    """`check()`'s first truthy answer, asked every `every` seconds; an AssertionError after
    `within` seconds without one."""
    deadline = time.monotonic() + within
    while not (found := check()):
        assert time.monotonic() < deadline, f"condition not met within {within:g} s"
        time.sleep(every)
    return found
