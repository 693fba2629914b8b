"""The fleet's workers as Ray actors (Ray Core): the only module that imports ray.

One actor per worker builds the pipeline once (tools.fleet.BagWorker) and replays the time
ranges it is handed, one at a time, so a range's frames keep their order (tracking). An
actor asks Ray for one GPU on CUDA, else for its threads as CPUs; before any is created the
request is checked against the nodes, so a worker that fits no node is an error at once,
not a wait for ever. Ray restarts an actor whose process died (killed, out of memory, node
lost), rebuilding its pipeline; the range it held goes back to the queue, with a new lease,
only once Ray says the actor died: an actor only unreachable for a while (ActorUnavailable)
may still be writing it, so it is asked again until it answers or is declared dead. Actors
run two threads so that progress can be asked while a range runs.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from pathlib import Path

from ..pipeline.config import NodeConfig
from .fleet import BagWorker, FleetError, Piece, PieceResult, grant, retry

log = logging.getLogger(__name__)

# Environment the workers need as the driver has it (the package, the engine cache).
FORWARDED_ENV = ("PYTHONPATH", "HYBRIDNETS_CACHE", "HYBRIDNETS_SHARED")
# Attempts of one range before it is reported failed (each lost a worker).
MAX_ATTEMPTS = 3
POLL_S = 0.5
KEPT_RESULTS = 16  # finished ranges an actor keeps for a driver that lost sight of it


# The local cluster's reaper: it notes the driver's descendants (pid and start time, so that
# a reused pid is left alone) every second until the driver's end closes its stdin (an exit
# or a kill -9), then stops those still there (SIGTERM, then SIGKILL).
_REAPER = """
import os, select, signal, sys, time
def descendants(root):
    children = {}
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append((int(name), int(fields[19])))
        except (OSError, ValueError, IndexError):
            pass
    found, pending = set(), [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child[0])
    return found
driver, seen = int(sys.argv[1]), set()
while True:
    seen |= {p for p in descendants(driver) if p[0] != os.getpid()}
    if select.select([sys.stdin], [], [], 1.0)[0] and not os.read(sys.stdin.fileno(), 4096):
        break
def stop(sig):
    stopped = 0
    for pid, start in seen:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[19]) == start and fields[0] != "Z":
                os.kill(pid, sig)
                stopped += 1
        except (OSError, ValueError, IndexError):
            pass
    return stopped
if stop(signal.SIGTERM):
    time.sleep(2)
    stop(signal.SIGKILL)  # the dashboard agent's SIGTERM handler waits on the dead GCS too
"""
_reaper: subprocess.Popen | None = None


def connect(address: str) -> tuple[bool, float]:
    """Joins the Ray cluster at ``address`` (``auto``: the one `ray start` runs here) or,
    for ``local``, starts one in this machine; an already initialised Ray (a test's) is
    used as it is. Returns (started here, seconds it took).

    The workers are the driver's job: Ray ends them when the driver ends, however it ends.
    A local cluster's own processes are started fate-shared with the driver (killed with
    it), all but its two agents, children of the raylet, which after a kill -9 would wait
    60 s on the dead GCS (Ray's fixed timeout) before they exit: a reaper process stops
    them at once."""
    import ray

    if ray.is_initialized():
        return False, 0.0
    started = time.monotonic()
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    options = dict(runtime_env={"env_vars": env} if env else None, include_dashboard=False,
                   logging_level=logging.WARNING, log_to_driver=True)
    if address == "local":
        _start_reaper()  # first: it sees the cluster's processes as they start
        ray.init(**options)
    else:
        ray.init(address=address, **options)
    return True, time.monotonic() - started


def _start_reaper() -> None:
    """The reaper of the local cluster started here (Linux: it reads /proc)."""
    global _reaper
    if Path("/proc/self/stat").is_file():
        _reaper = subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid())],
                                   stdin=subprocess.PIPE, start_new_session=True)


def cluster_nodes() -> list[dict]:
    """The alive nodes: address, CPU and GPU counts."""
    import ray
    return [dict(address=n.get("NodeManagerAddress", "?"), CPU=n["Resources"].get("CPU", 0.0),
                 GPU=n["Resources"].get("GPU", 0.0)) for n in ray.nodes() if n.get("Alive")]


def plan_workers(nodes: list[dict], workers: int, threads: int | None, gpus: int) -> int:
    """Threads per worker for ``workers`` actors of ``gpus`` GPU(s) each on ``nodes``: the
    most that still places every worker (``threads`` when given), from the nodes' own CPUs
    (a worker runs on one node). FleetError, naming what was asked and what the nodes
    have, when they cannot all be placed."""

    def capacity(cpus_each: int) -> int:
        return sum(min(int(n["CPU"] // cpus_each),
                       int(n["GPU"] // gpus) if gpus else workers) for n in nodes)

    largest = int(max((n["CPU"] for n in nodes), default=0))
    if threads is None:
        threads = next((t for t in range(largest, 0, -1) if capacity(t) >= workers), 1)
    if capacity(threads) >= workers:
        return threads
    have = "; ".join(_node(n) for n in nodes) or "no alive node"
    asked = (f"{workers} worker{'s' if workers > 1 else ''} of {threads} "
             f"CPU{'s' if threads > 1 else ''}{f' and {gpus} GPU' if gpus else ''} each")
    fits = capacity(threads)
    hint = f"at most {fits} such workers fit" if fits else "no node has that much"
    raise FleetError(f"the Ray cluster cannot place {asked} ({hint}); its nodes: {have}. "
                     f"Lower --workers or --threads, or add nodes")


def _node(node: dict) -> str:
    gpus = f", {node['GPU']:g} GPU" if node["GPU"] else ""
    return f"{node['address']}: {node['CPU']:g} CPU{gpus}"


class _ActorWorker(BagWorker):
    """BagWorker with warnings-only logging (workers' logs do not scroll the bar), that
    remembers its last results by token for a driver that lost sight of it."""

    def __init__(self, config: NodeConfig, threads: int | None, name: str):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        super().__init__(config, threads, name)
        self.finished: OrderedDict[str, PieceResult] = OrderedDict()

    def pid(self) -> int:
        return os.getpid()

    def run_piece(self, piece: Piece) -> PieceResult:
        result = self.run(piece)
        self.finished[piece.token] = result
        while len(self.finished) > KEPT_RESULTS:
            self.finished.popitem(last=False)
        return result

    def outcome(self, token: str) -> tuple[str, PieceResult | int | None]:
        """("finished", result), ("running", frames) or ("unknown", None): this process
        never ran it (the actor restarted in between)."""
        if token in self.finished:
            return "finished", self.finished[token]
        if self.current == token:
            return "running", self.frames_done
        return "unknown", None


def on_actor_error(exc: Exception) -> str:
    """What a range's actor error means: "ask" (ActorUnavailableError: unreachable for now,
    maybe still writing the range) or "dead" (Ray says the process died: redo elsewhere)."""
    from ray.exceptions import ActorUnavailableError
    return "ask" if isinstance(exc, ActorUnavailableError) else "dead"


class RayPool:
    """``workers`` actors; ``run`` hands them the ranges and yields each range's result."""

    def __init__(self, config: NodeConfig, workers: int, threads: int, gpus: float):
        import ray

        self.workers = workers
        actor_class = ray.remote(_ActorWorker)
        self.actors = [actor_class.options(
            num_cpus=threads, num_gpus=gpus, max_restarts=-1, max_task_retries=0,
            max_concurrency=2).remote(config, threads, f"worker{index}")
            for index in range(workers)]
        started = time.monotonic()
        ray.get([actor.pid.remote() for actor in self.actors])  # every pipeline built
        self.ready_s = time.monotonic() - started

    def run(self, pieces: list[Piece], progress: Callable[[str, int, int], None]
            ) -> Iterator[PieceResult]:
        import ray
        from ray.exceptions import ActorDiedError, RayActorError, RayError

        queue, idle = deque(pieces), deque(self.actors)
        running: dict = {}     # result ref -> (actor, piece)
        asking: dict = {}      # outcome ref -> (actor, piece): unreachable, maybe still on it
        restarting: dict = {}  # pid ref -> an actor whose process died, until it answers
        polled: dict = {}      # progress ref -> piece

        def lost(actor, piece: Piece, exc: Exception):
            """The actor died with ``piece``: redo it elsewhere (or give up on it)."""
            restarting[actor.pid.remote()] = actor
            progress(piece.key, piece.index, 0)
            if piece.attempt >= MAX_ATTEMPTS:
                return PieceResult(piece.key, piece.index, piece.count, "failed",
                                   attempt=piece.attempt,
                                   error=f"its worker died {piece.attempt} times: {exc}")
            log.warning("a worker died during %s (attempt %d); redoing it", piece.name,
                        piece.attempt)
            queue.appendleft(retry(piece))  # to the next free worker, likely another one
            return None

        while queue or running or asking:
            if not (idle or running or restarting or asking):  # every worker gone for good
                for piece in queue:
                    yield PieceResult(piece.key, piece.index, piece.count, "failed",
                                      attempt=piece.attempt, error="no Ray worker left to run it")
                return
            while queue and idle:
                actor, piece = idle.popleft(), queue.popleft()
                piece = piece if piece.token else grant(piece)  # retries have a new one
                running[actor.run_piece.remote(piece)] = (actor, piece)
            ready, _ = ray.wait([*running, *asking, *restarting], num_returns=1, timeout=POLL_S)
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
                if ref in asking:
                    actor, piece = asking.pop(ref)
                    try:
                        state, value = ray.get(ref)
                    except RayActorError as exc:
                        if on_actor_error(exc) == "ask":
                            asking[actor.outcome.remote(piece.token)] = (actor, piece)
                        elif (failed := lost(actor, piece, exc)) is not None:
                            yield failed
                        continue
                    if state == "running":
                        progress(piece.key, piece.index, value)
                        time.sleep(POLL_S)
                        asking[actor.outcome.remote(piece.token)] = (actor, piece)
                    elif state == "finished":
                        idle.append(actor)
                        yield value
                    else:  # that process never ran it: the actor restarted
                        idle.append(actor)
                        queue.appendleft(retry(piece))
                    continue
                actor, piece = running.pop(ref)
                try:
                    result = ray.get(ref)
                except RayActorError as exc:
                    if on_actor_error(exc) == "ask":
                        log.warning("a worker is unreachable during %s; asking it again",
                                    piece.name)
                        asking[actor.outcome.remote(piece.token)] = (actor, piece)
                    elif (failed := lost(actor, piece, exc)) is not None:
                        yield failed
                    continue
                except RayError as exc:
                    result = PieceResult(piece.key, piece.index, piece.count, "failed",
                                         attempt=piece.attempt,
                                         error=f"{type(exc).__name__}: {exc}")
                idle.append(actor)
                yield result
            self._poll(running, polled, progress)

    @staticmethod
    def _poll(running: dict, polled: dict, progress) -> None:
        """Frames done of each running range, from the answers that are in."""
        import ray

        if polled:
            answered, _ = ray.wait(list(polled), num_returns=len(polled), timeout=0)
            for ref in answered:
                piece = polled.pop(ref)
                try:
                    token, frames = ray.get(ref)
                except Exception:  # the worker died meanwhile: its result says so
                    continue
                if token == piece.token:
                    progress(piece.key, piece.index, frames)
        waiting = {p.token for p in polled.values()}
        for actor, piece in running.values():
            if piece.token not in waiting:
                polled[actor.progress.remote()] = piece

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def shutdown() -> None:
    """Stops the local cluster started here (its reaper then finds nothing left)."""
    global _reaper
    import ray
    ray.shutdown()
    if _reaper is not None:
        _reaper.stdin.close()
        _reaper.wait()
        _reaper = None
