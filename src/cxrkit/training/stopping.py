"""Early stopping on the monitored validation value, and the per-epoch seed every random draw uses."""

from __future__ import annotations

from dataclasses import asdict, dataclass

MINIMISE = frozenset({"loss"})  # monitored values where lower is better; every other one is maximised


def epoch_seed(seed: int, epoch: int) -> int:
    """THE seed of epoch ``epoch``'s random draws (order, augmentation, dropout): resumes repeat them."""
    return seed * 100_003 + epoch


@dataclass
class EarlyStopping:
    """The best monitored value so far, when it came, and whether training should stop.

    ``state()``/``from_state`` are the checkpoint form (``early_stop`` in last.pt), so a resumed run
    continues with the same patience count.
    """

    monitor: str
    patience: int = 0  # epochs without improvement before stopping (0: never stop early)
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped: bool = False

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (NaN never does)."""
        if value != value:
            return False
        if self.best is None:
            return True
        return value < self.best if self.monitor in MINIMISE else value > self.best

    def update(self, value: float, epoch: int, diverged: bool = False) -> bool:
        """Record epoch ``epoch``'s (1-based) value; True when it is the new best. A divergence stops."""
        improved = self.improves(value)
        if improved:
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped = bool(self.patience and self.bad_epochs >= self.patience) or diverged
        return improved

    def state(self) -> dict:
        """The checkpoint form: best, best_epoch, bad_epochs, stopped."""
        return {k: v for k, v in asdict(self).items() if k not in ("monitor", "patience")}

    @classmethod
    def from_state(cls, monitor: str, patience: int, state: dict | None = None) -> EarlyStopping:
        """A new tracker, or the one a checkpoint saved."""
        keep = ("best", "best_epoch", "bad_epochs", "stopped")
        return cls(monitor, patience, **{k: v for k, v in (state or {}).items() if k in keep})
