"""The fleet's workers as Ray actors (Ray Core): the only module that imports ray.

One actor per worker builds the pipeline once (tools.fleet.BagWorker) and replays the bags
it is handed, one at a time, so a bag's frames keep their order (tracking) and a bag is
the unit of retry. An actor asks Ray for one GPU on CUDA, else for its share of the CPU
cores (its thread count). Ray restarts an actor whose process died (killed, out of memory,
node lost), rebuilding its pipeline; the bag it held goes back to the queue for whichever
worker is free next. Actors run two threads so that progress can be asked while a bag runs.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator

from ..pipeline.config import NodeConfig
from .fleet import BagJob, BagResult, BagWorker, retry

log = logging.getLogger(__name__)

# Environment the workers need as the driver has it (the package, the engine cache).
FORWARDED_ENV = ("PYTHONPATH", "HYBRIDNETS_CACHE", "HYBRIDNETS_SHARED")
# Attempts of one bag before it is reported failed (each lost a worker).
MAX_ATTEMPTS = 3
POLL_S = 0.5


def connect(address: str) -> tuple[bool, float]:
    """Joins the Ray cluster at ``address`` (``auto``: the one `ray start` runs here) or,
    for ``local``, starts one in this machine; an already initialised Ray (a test's) is
    used as it is. Returns (started here, seconds it took)."""
    import ray

    if ray.is_initialized():
        return False, 0.0
    started = time.monotonic()
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    options = dict(runtime_env={"env_vars": env} if env else None, include_dashboard=False,
                   logging_level=logging.WARNING, log_to_driver=True)
    if address == "local":
        ray.init(**options)
    else:
        ray.init(address=address, **options)
    return True, time.monotonic() - started


class _ActorWorker(BagWorker):
    """BagWorker with warnings-only logging, so workers' logs do not scroll the bar."""

    def __init__(self, config: NodeConfig, threads: int | None, name: str):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        super().__init__(config, threads, name)

    def pid(self) -> int:
        return os.getpid()


class RayPool:
    """``workers`` actors; ``run`` hands them the jobs and yields each bag's result."""

    def __init__(self, config: NodeConfig, workers: int, threads: int | None, gpus: float):
        import ray

        self.workers = workers
        actor_class = ray.remote(_ActorWorker)
        cpus = threads or 1
        self.actors = [actor_class.options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=0,
            max_concurrency=2, name=None).remote(config, threads, f"worker{index}")
            for index in range(workers)]
        started = time.monotonic()
        ray.get([actor.pid.remote() for actor in self.actors])  # every pipeline built
        self.ready_s = time.monotonic() - started

    def run(self, jobs: list[BagJob], progress: Callable[[str, int], None]) -> Iterator[BagResult]:
        import ray
        from ray.exceptions import ActorDiedError, RayActorError, RayError

        queue, idle = deque(jobs), deque(self.actors)
        running: dict = {}     # result ref -> (actor, job)
        restarting: dict = {}  # pid ref -> an actor whose process died, until it answers
        asked: dict = {}       # progress ref -> job name
        while queue or running:
            if not (idle or running or restarting):  # every worker is gone for good
                for job in queue:
                    yield BagResult(job.name, job.path, "failed", attempts=job.attempt,
                                    error="no Ray worker left to run it")
                return
            while queue and idle:
                actor, job = idle.popleft(), queue.popleft()
                running[actor.run.remote(job)] = (actor, job)
            ready, _ = ray.wait([*running, *restarting], num_returns=1, timeout=POLL_S)
            for ref in ready:
                if ref in restarting:
                    actor = restarting.pop(ref)
                    try:
                        ray.get(ref)
                        idle.append(actor)  # restarted, its pipeline rebuilt
                    except ActorDiedError:
                        log.warning("a Ray worker could not be restarted; going on without it")
                    except RayActorError:  # still restarting
                        restarting[actor.pid.remote()] = actor
                    continue
                actor, job = running.pop(ref)
                try:
                    result = ray.get(ref)
                except RayActorError as exc:
                    restarting[actor.pid.remote()] = actor
                    progress(job.name, 0)
                    if job.attempt >= MAX_ATTEMPTS:
                        yield BagResult(job.name, job.path, "failed", attempts=job.attempt,
                                        error=f"its worker died {job.attempt} times: {exc}")
                    else:  # to the next free worker, likely another one
                        log.warning("a worker died during %s (attempt %d); redoing it",
                                    job.name, job.attempt)
                        queue.appendleft(retry(job))
                    continue
                except RayError as exc:
                    result = BagResult(job.name, job.path, "failed", attempts=job.attempt,
                                       error=f"{type(exc).__name__}: {exc}")
                idle.append(actor)
                yield result
            self._poll(running, asked, progress)

    @staticmethod
    def _poll(running: dict, asked: dict, progress) -> None:
        """Frames done of each running bag, from the answers that are in."""
        import ray

        if asked:
            answered, _ = ray.wait(list(asked), num_returns=len(asked), timeout=0)
            for ref in answered:
                name = asked.pop(ref)
                try:
                    current, frames = ray.get(ref)
                except Exception:  # the worker died meanwhile: its result says so
                    continue
                if current == name and any(job.name == name for _, job in running.values()):
                    progress(name, frames)
        waiting = set(asked.values())
        for actor, job in running.values():
            if job.name not in waiting:
                asked[actor.progress.remote()] = job.name

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def shutdown() -> None:
    import ray
    ray.shutdown()
