"""The inference pool: concurrent requests become one batch with each answer routed back, a full queue
refuses at once, and a failure reaches every waiting request."""

import threading
import time

import numpy as np
import pytest

from cxrkit.serve.batcher import Batcher, Overloaded


def test_waiting_requests_are_scored_as_one_batch_and_answered_in_place():
    batches = []
    gate = threading.Event()

    def score(images):
        gate.wait(5)
        batches.append(len(images))
        return images.reshape(len(images), -1).sum(axis=1, keepdims=True).astype(float)

    pool = Batcher(score, workers=1, queue=10, max_batch=8)
    first = pool.submit(np.ones((1, 2, 2)))  # occupies the worker
    time.sleep(0.05)
    waiting = [pool.submit(np.full((k, 2, 2), k)) for k in (1, 2, 3)]
    assert pool.in_flight == 4
    gate.set()
    assert first.result(5).tolist() == [[4.0]]
    assert [f.result(5).ravel().tolist() for f in waiting] == [[4.0], [8.0, 8.0], [12.0, 12.0, 12.0]]
    assert batches == [1, 6]  # the three waiting requests went through in one forward pass
    time.sleep(0.05)
    assert pool.in_flight == 0
    pool.close()


def test_a_full_queue_refuses_and_a_failure_reaches_every_waiter():
    gate = threading.Event()

    def score(images):
        gate.wait(5)
        raise RuntimeError("engine crashed")

    pool = Batcher(score, workers=1, queue=2, max_batch=4)
    futures = [pool.submit(np.zeros((1, 2, 2))) for _ in range(3)]  # 1 running + 2 waiting
    with pytest.raises(Overloaded):
        pool.submit(np.zeros((1, 2, 2)))
    with pytest.raises(Overloaded):
        pool.submit_call(lambda: 1)
    gate.set()
    for f in futures:
        with pytest.raises(RuntimeError, match="engine crashed"):
            f.result(5)
    time.sleep(0.05)
    assert pool.submit_call(lambda: 42).result(5) == 42  # the pool lives on
    pool.close()


def test_a_heatmap_job_met_while_batching_runs_next_not_last():
    gate = threading.Event()
    order: list[str] = []

    def score(images):
        gate.wait(5)
        order.extend(f"score{int(v)}" for v in images[:, 0, 0])
        return np.zeros((len(images), 1))

    pool = Batcher(score, workers=1, queue=10, max_batch=8)
    first = pool.submit(np.full((1, 2, 2), 1))  # occupies the worker
    time.sleep(0.05)
    b = pool.submit(np.full((1, 2, 2), 2))
    call = pool.submit_call(lambda: order.append("heatmap"))
    d = pool.submit(np.full((1, 2, 2), 4))
    gate.set()
    for f in (first, b, call, d):
        f.result(5)
    assert order == ["score1", "score2", "heatmap", "score4"]  # the heatmap kept its place in line
    pool.close()


def test_a_batch_stops_at_max_batch_images_and_the_defaults_are_the_services():
    from cxrkit.config import ServeConfig

    batches = []
    gate = threading.Event()

    def score(images):
        gate.wait(5)
        batches.append(len(images))
        return np.zeros((len(images), 1))

    pool = Batcher(score, workers=1, queue=10, max_batch=3)
    first = pool.submit(np.zeros((1, 2, 2)))  # occupies the worker
    time.sleep(0.05)
    rest = [pool.submit(np.zeros((1, 2, 2))) for _ in range(4)]
    gate.set()
    for f in [first, *rest]:
        f.result(5)
    assert batches == [1, 3, 1]  # never more than max_batch images in one forward pass
    pool.close()
    default = Batcher(score)
    cfg = ServeConfig()
    assert (default.max_batch, default.limit) == (cfg.max_batch, cfg.queue + cfg.workers)
    default.close()
