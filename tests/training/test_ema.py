"""Weight averaging (train.ema): the average's arithmetic, its resume state, and what a run ships."""

import torch
from test_fit import tiny
from torch import nn

from cxrkit.run.checkpoint import load_checkpoint
from cxrkit.training.ema import WeightAverage
from cxrkit.training.loop import fit


def test_the_average_follows_the_ramped_decay():
    net = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    avg = WeightAverage(net, 0.9)
    start = avg.model[0].weight.clone()
    expect = start.clone()
    for step in range(1, 4):
        with torch.no_grad():
            net[0].weight.add_(1.0)
        net[1].num_batches_tracked += 1
        avg.update(net)
        d = min(0.9, (1 + step) / (10 + step))
        expect = d * expect + (1 - d) * net[0].weight
    torch.testing.assert_close(avg.model[0].weight, expect)
    assert int(avg.model[1].num_batches_tracked) == 3  # integer buffers are copied, not averaged
    again = WeightAverage(net, 0.9, avg.state())
    assert again.updates == 3 and torch.equal(again.model[0].weight, avg.model[0].weight)


def test_a_run_with_ema_ships_the_averaged_weights(tmp_path):
    run = fit(tiny(tmp_path, epochs=1, ema=0.99), log=lambda m: None)
    last = load_checkpoint(run / "last.pt")
    best = load_checkpoint(run / "best.pt")["model_state"]
    assert last["ema"]["updates"] > 0
    key = next(k for k, v in best.items() if v.dtype.is_floating_point and "weight" in k)
    ema_w, raw_w = last["ema"]["weights"][key], last["model_state"][key]
    assert not torch.equal(ema_w, raw_w)
    assert torch.equal(best[key], ema_w)  # one epoch: best.pt is that epoch's average, not the raw weights
