"""``cxr predict --ray [ADDRESS]``: the shards of ``workflows.shards`` scored by actors on a Ray cluster.

Ray Data maps the shards still to score over a pool of actors (``ActorPoolStrategy``), one shard per
call; each actor loads the run once (``RunModel.load``, on a GPU with ``gpus`` > 0) and writes the
parts itself, returning only counts, so the driver's memory does not grow with the archive. The plan,
the manifest, ``--resume`` and the final check are those of one process: the rows are the same.

Pointing it at a cluster (cxrkit and ``cxrkit[ray]`` installed on every node, the run folder, the
inputs and ``--out`` on a path every node reads and writes under the same name, e.g. an NFS mount)::

    ray start --head --port 6379                 # on the head node
    ray start --address HEAD:6379                # on each other node
    cxr predict /shared/run /shared/archive --out /shared/scores --shards 1000 --ray HEAD:6379

``ADDRESS`` is what ``ray.init`` takes: ``HOST:PORT`` of the head, ``ray://HOST:10001`` (Ray Client)
or ``auto`` (the cluster this node belongs to, or ``$RAY_ADDRESS``). No address starts a local Ray
on this machine. Ray is imported only here and only when asked for.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from cxrkit.run.model import RunModel
from cxrkit.workflows.shards import Scorer, ShardJob, part_name, score_shard

COUNTS = ("shard", "rows", "not_scored", "flagged")
CONNECT_TIMEOUT_S = 60.0  # ray.init on a port that answers but is no Ray head retries for minutes


class ShardScorer:
    """A Ray Data actor: the run loaded once; each call scores whole shards and writes their parts."""

    def __init__(
        self,
        run: str,
        out: str,
        fmt: str,
        options: dict[str, Any],
        batch_size: int,
        device: str,
        threads: int,
    ) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.model = RunModel.load(run, device, options["engine"])
        self.out, self.fmt, self.options, self.batch_size = Path(out), fmt, options, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``batch``: shard numbers and their inputs (JSON lists); one row of counts per shard back."""
        rows = []
        for k, sources in zip(batch["shard"], batch["paths"], strict=True):
            part = self.out / part_name(int(k), self.fmt)
            stats = score_shard(
                self.model, json.loads(sources), part, self.fmt, self.options, self.batch_size
            )
            rows.append({"shard": int(k), **stats})
        return {key: np.array([r[key] for r in rows], dtype=np.int64) for key in COUNTS}


def head_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) a Ray address points at (``HOST``, ``HOST:PORT``, ``ray://HOST:PORT``); None for auto."""
    if address == "auto":
        return None
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(
            f"--ray {address}: not a Ray address (expected HOST:PORT, ray://HOST:PORT or auto)"
        ) from None
    if not parts.hostname:
        raise ValueError(f"--ray {address}: not a Ray address (expected HOST:PORT, ray://HOST:PORT or auto)")
    return parts.hostname, port or (10001 if address.startswith("ray://") else 6379)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ConnectionError in ``timeout`` seconds when nothing listens at ``address`` (ray.init would retry)."""
    endpoint = head_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(
            f"--ray {address}: no Ray head reachable at {endpoint[0]}:{endpoint[1]} "
            f"({err.strerror or type(err).__name__}); start one with `ray start --head` or check the address"
        ) from None


def connect(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Join the Ray cluster at ``address`` (None: start a local Ray); True when this call connected.

    Already connected (a notebook, a test): that connection is used and False returned. Never hangs:
    an unreachable head fails in seconds, a port that answers but is no Ray head after ``timeout``.
    """
    import ray

    if ray.is_initialized():
        return False
    if address is None:  # in this thread: Ray's processes die with the thread that started them
        try:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        except Exception as err:
            raise ConnectionError(f"--ray: cannot start a local Ray: {_first_line(err)}") from None
        return True
    check_reachable(address)
    box: dict[str, BaseException] = {}

    def init() -> None:  # a driver joining a cluster starts no process, so a watchdog thread may do it
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    worker = threading.Thread(target=init, name="ray-connect", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise ConnectionError(
            f"--ray {address}: no answer from a Ray head there after {timeout:.0f} s (is it the head's port?)"
        )
    if "error" in box:
        raise ConnectionError(
            f"--ray {address}: cannot connect to the Ray cluster: {_first_line(box['error'])} (a cluster "
            "with token authentication needs RAY_AUTH_MODE=token and its token here; see Ray's token-auth)"
        ) from None
    return True


def _first_line(err: BaseException) -> str:
    """An exception's first line (Ray's carry a traceback or a long how-to)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def actor_count(todo: int, workers: int | None, cpus: float, gpus: float) -> int:
    """How many actors: ``workers``, else as many as the cluster's CPUs (GPUs with ``gpus``) hold; <= todo."""
    import ray

    if workers is None:
        res = ray.cluster_resources()
        if gpus > 0 and res.get("GPU", 0) < gpus:
            raise ValueError(f"--ray-gpus {gpus:g}: the Ray cluster has {res.get('GPU', 0):g} GPU(s)")
        workers = int(res.get("GPU", 0) // gpus) if gpus > 0 else int(res.get("CPU", 1) // cpus)
    return max(1, min(workers, todo))


def ray_scorer(
    address: str | None = None,
    workers: int | None = None,
    cpus: float = 1.0,
    gpus: float = 0.0,
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = True,
) -> Scorer:
    """A ``Scorer`` (see ``workflows.shards``) running the shards on Ray actors; ``cpus``/``gpus`` per actor.

    ``device``: where an actor runs the network (default: cuda with ``gpus`` > 0, else cpu).
    """
    import ray  # fails here, before any file is written, when the extra is absent

    if workers is not None and workers < 1:
        raise ValueError(f"--ray-workers {workers}: expected a whole number >= 1")
    if cpus <= 0 or gpus < 0:
        raise ValueError(f"--ray-cpus {cpus:g} / --ray-gpus {gpus:g}: expected CPUs > 0 and GPUs >= 0")
    if address is not None and not ray.is_initialized():
        check_reachable(address)  # a wrong address fails before the manifest is written

    def score(job: ShardJob, todo: list[int], model: RunModel) -> Iterator[dict[str, Any]]:
        if not todo:
            return
        started = connect(address)
        try:
            from ray.data import ActorPoolStrategy, DataContext, from_items
            from ray.exceptions import RayError

            DataContext.get_current().enable_progress_bars = progress
            if not progress:  # --quiet: Ray Data's "starting execution" lines too
                logging.getLogger("ray.data").setLevel(logging.WARNING)
            items = [{"shard": k, "paths": json.dumps(job.shards[k])} for k in todo]
            n = actor_count(len(todo), workers, cpus, gpus)
            scored = from_items(items, override_num_blocks=len(items)).map_batches(
                ShardScorer,
                batch_size=1,
                compute=ActorPoolStrategy(size=n),
                num_cpus=cpus,
                num_gpus=gpus or None,
                fn_constructor_kwargs={
                    "run": str(job.run),
                    "out": str(job.out),
                    "fmt": job.fmt,
                    "options": job.options,
                    "batch_size": batch_size,
                    "device": device or ("cuda" if gpus > 0 else "cpu"),
                    "threads": int(cpus),
                },
            )
            try:
                yield from scored.iter_rows()
            except RayError as err:  # a worker's own error (a run it cannot read): as is
                cause = getattr(err, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise RuntimeError(f"a Ray worker failed: {_first_line(err)}") from None
        finally:
            if started:
                ray.shutdown()

    return score
