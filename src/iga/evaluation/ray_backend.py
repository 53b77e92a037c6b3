"""Scale-out on Ray: the same SweepWorker as a Ray actor, one model load per actor, groups shared out.

Optional: ``pip install 'iga-diffusion[ray]'``. ``address`` None starts a local Ray runtime (``num_cpus`` = the
machine's cores); otherwise it joins that cluster (``ray://host:10001`` or ``auto``). Actors send pixels back
to the parent, which saves them, so workers need no shared filesystem — only the model file at the same path.
"""

from __future__ import annotations

import os
from typing import Iterator

from .worker import Group, Result, SweepWorker, WorkerConfig


class RayUnavailable(RuntimeError):
    """Ray is not installed or the cluster cannot be reached."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("the Ray backend needs Ray: pip install 'iga-diffusion[ray]' (or use --backend "
                             "local)") from None
    return ray


def run_on_ray(groups: list[Group], config: WorkerConfig, actors: int, address: str | None) -> Iterator[Result]:
    """Results of every group, computed by ``actors`` Ray actors (group by group, as they finish)."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError ... for a bad address
            raise RayUnavailable(f"cannot start or reach Ray ({address or 'local runtime'}): {e}") from None
    try:
        remote_worker = ray.remote(num_cpus=config.threads or 1)(SweepWorker)
        pool = ray.util.ActorPool([remote_worker.remote(config) for _ in range(max(1, actors))])
        for results in pool.map_unordered(lambda a, g: a.run_group_list.remote(g), groups):
            yield from results
    finally:
        if started_here:
            ray.shutdown()
