"""Replaying a stored plan: what must hold before it runs, and the thread count it must run with.

Shared by `iga replay` and the server's replay, so both refuse the same plans and reproduce the same pixels.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from iga.guard.resolve import MAX_PLAN_STEPS


def stored_plan_problem(plan: Any, source: Any) -> str | None:
    """Why a stored plan must not run on ``source`` (a ModelSource), or None: the guard must accept it as a
    request, and its sigma list must be one the engine runs."""
    from iga.guard import GuardRefused

    try:
        source.resolve(plan.as_request(), "permissive")
    except GuardRefused as e:
        why = "; ".join(f"{f.field}: {f.reason}" for f in e.findings if f.outcome == "refused")
        return f"the stored plan asks for what the guard refuses ({why})"
    except (ValueError, KeyError) as e:
        return f"the stored plan cannot be read as a request: {e}"
    if len(plan.sigmas) > MAX_PLAN_STEPS + 1:
        return f"the stored plan has {len(plan.sigmas)} sigmas (limit {MAX_PLAN_STEPS + 1}); refusing"
    return None


def recorded_thread_count(plan: Any) -> int | None:
    """The thread count a plan's pixels were computed with, when this machine can use it."""
    threads = (getattr(plan, "runtime", None) or {}).get("threads")
    if isinstance(threads, int) and not isinstance(threads, bool) and 1 <= threads <= 4 * (os.cpu_count() or 1):
        return threads
    return None


@contextlib.contextmanager
def recorded_threads(plan: Any) -> Iterator[None]:
    """Run with the plan's recorded thread count (convolution sums depend on the split), then restore it.
    ``plan`` None: leave the thread count alone."""
    threads = recorded_thread_count(plan) if plan is not None else None
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
