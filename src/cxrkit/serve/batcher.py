"""A bounded inference pool: requests wait in a bounded queue; a worker scores waiting ones as one batch.

Concurrent requests are merged (up to ``max_batch`` images) into one forward pass, which is what
makes a CPU engine fast under load; a request beyond ``queue`` waiting ones is refused at once
(``Overloaded`` -> 503 with Retry-After) instead of piling up in memory.
"""

from __future__ import annotations

import queue as queue_mod
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrkit.config import ServeConfig


class Overloaded(RuntimeError):
    """The queue is full: try again later."""


@dataclass
class _Job:
    future: Future
    images: np.ndarray | None = None  # a scoring job (batched with others)
    call: Callable[[], Any] | None = None  # any other job (Grad-CAM), run alone
    size: int = field(default=1)  # pragma: no mutate (every scoring job sets its size; calls have none)


class Batcher:
    """``score(images)`` -> (N, L) in ``workers`` threads; ``submit``/``submit_call`` return Futures."""

    def __init__(
        self,
        score: Callable[[np.ndarray], np.ndarray],
        workers: int = ServeConfig.workers,
        queue: int = ServeConfig.queue,
        max_batch: int = ServeConfig.max_batch,
    ) -> None:
        self.score, self.limit, self.max_batch = score, queue + workers, max_batch
        self._jobs: queue_mod.Queue[_Job | None] = queue_mod.Queue()
        self._lock = threading.Lock()
        self._admitted = 0
        self._threads = [
            # pragma: no mutate (next line) -- daemon: a stuck model never keeps the process alive
            threading.Thread(target=self._work, name=f"cxr-infer-{k}", daemon=True)
            for k in range(workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished (waiting or running)."""
        return self._admitted

    def _admit(self, job: _Job) -> Future:
        with self._lock:
            if self._admitted >= self.limit:
                raise Overloaded(f"{self._admitted} requests in flight (limit {self.limit})")
            self._admitted += 1
        job.future.add_done_callback(self._release)
        self._jobs.put(job)
        return job.future

    def _release(self, _f: Future) -> None:
        with self._lock:
            self._admitted -= 1

    def submit(self, images: np.ndarray) -> Future:
        """Score uint8 images (K, S, S); the Future's result is their (K, L) scores."""
        return self._admit(_Job(Future(), images=images, size=len(images)))

    def submit_call(self, call: Callable[[], Any]) -> Future:
        """Run ``call`` in the pool (counted against the same limit), alone."""
        return self._admit(_Job(Future(), call=call))

    def close(self) -> None:
        """Stop the workers once the waiting jobs are done."""
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=30)  # pragma: no mutate (a bound on shutdown, not behaviour)

    def _work(self) -> None:
        held: _Job | None = None  # a job met while gathering a batch: this worker runs it next, in order
        while True:
            job, held = (held, None) if held is not None else (self._jobs.get(), None)
            if job is None:
                return
            if job.call is not None:
                _run(job.future, job.call)
                continue
            batch = [job]
            total = job.size
            while total < self.max_batch:
                try:
                    nxt = self._jobs.get_nowait()
                except queue_mod.Empty:
                    break
                if nxt is None or nxt.call is not None:  # not batchable: next, not sent to the back
                    if nxt is None:
                        self._jobs.put(None)  # the stop signal stays for this loop's next turn
                    else:
                        held = nxt
                    break
                batch.append(nxt)
                total += nxt.size
            self._score(batch)

    def _score(self, batch: list[_Job]) -> None:
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            out = self.score(np.concatenate([j.images for j in live]))  # type: ignore[misc]
        except BaseException as err:  # every waiting request learns of the failure
            for j in live:
                j.future.set_exception(err)
            return
        start = 0
        for j in live:
            j.future.set_result(out[start : start + j.size])
            start += j.size


def _run(future: Future, call: Callable[[], Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(call())
    except BaseException as err:
        future.set_exception(err)
