"""``fit(RunConfig) -> run folder``: data, split, model, optimiser, epochs, checkpoints, in that order.

A run folder holds ``config.yaml`` (resolved), ``split.csv``, ``metrics.csv`` (one row per epoch),
``curves.png``, ``best.pt`` and ``last.pt``. Every random draw of epoch ``e`` comes from seeds
derived from (seed, e), so a run is repeatable and a resumed run continues exactly as an
uninterrupted one would. Under torchrun each rank trains on its DistributedSampler shard, every
rank evaluates the validation set, rank 0's monitored value decides early stopping for all,
and rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrkit.config import RunConfig, SplitConfig, TrainConfig, build_run_config, load_yaml
from cxrkit.data import build_dataset
from cxrkit.data.cache import CachedDataset, cache_key, prepare_cache
from cxrkit.data.splits import Split, patient_split, save_split_manifest, split_from_column
from cxrkit.evaluate.metrics import summary_metrics
from cxrkit.labels import try_canonical_label
from cxrkit.models import create_model
from cxrkit.models.net import CXRNet
from cxrkit.training import distributed as ddp
from cxrkit.training.augment import augment_batch
from cxrkit.training.checkpoint import cpu_state, load_checkpoint, save_checkpoint
from cxrkit.training.losses import LossFn, build_loss

Log = Callable[[str], None]
MINIMISE = {"loss"}


@dataclass
class TrainData:
    """A prepared cache, the labels trained on, their targets and the split."""

    cache: CachedDataset
    labels: tuple[str, ...]
    targets: np.ndarray  # (N, L) float32, NaN unknown
    split: Split
    task: str

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 1, S, S) in [0, 1] and targets (B, L) for rows ``idx`` (read in sorted order)."""
        idx = np.sort(idx)
        x = torch.from_numpy(np.ascontiguousarray(self.cache.images[idx])).to(device)
        x = x.unsqueeze(1).float().div_(255.0)
        return x, torch.from_numpy(self.targets[idx]).to(device)


def select_labels(available: tuple[str, ...], wanted: tuple[str, ...]) -> list[int]:
    """Columns of ``wanted`` labels (any spelling) among ``available``; all when none is given."""
    if not wanted:
        return list(range(len(available)))
    out = []
    for w in wanted:
        name = try_canonical_label(w) or w
        if name not in available:
            raise ValueError(f"train.labels: {w!r} is not a label of this dataset ({', '.join(available)})")
        out.append(available.index(name))
    return out


def make_split(meta: pd.DataFrame, targets: np.ndarray, scfg: SplitConfig) -> Split:
    """Patient-grouped stratified split, or the source's official one; train and val must exist."""
    if scfg.method == "official":
        split = split_from_column(meta, targets=targets, val_fraction=scfg.val, seed=scfg.seed)
    elif scfg.method == "patient":
        split = patient_split(meta["patient_id"].to_numpy(), targets, scfg.fractions(), scfg.seed)
    else:
        raise ValueError(f"split.method {scfg.method!r}: expected patient or official")
    for part in ("train", "val"):
        if len(split.get(part, [])) == 0:
            raise ValueError(f"the split has no {part} images; use more data or other split fractions")
    return split


def prepare_data(cfg: RunConfig, info: ddp.DistInfo, log: Log) -> TrainData:
    """Build the dataset, cache it once (rank 0), select labels, split by patient."""
    ds = build_dataset(cfg.data)
    p = cfg.prepare
    key = cache_key(ds, p.size, p.mode)  # type: ignore[arg-type]
    path = Path(cfg.cache_dir) / f"{ds.source}-{p.size}{p.mode}-{key[:12]}"
    if info.main:
        res = prepare_cache(
            ds,
            path,
            size=p.size,
            mode=p.mode,
            workers=p.workers or None,  # type: ignore[arg-type]
            progress=cfg.train.progress,
            force=p.force,
            key=key,
        )
        log(
            f"data: {ds.summary()}; cache {'reused' if res.reused else 'built'} at {path}"
            + (f" ({len(res.failures)} unreadable files skipped)" if res.failures else "")
        )
    ddp.barrier(info)
    cache = CachedDataset(path)
    cols = select_labels(cache.labels, cfg.train.labels)
    targets = cache.targets()[:, cols]
    task = cache.task if cfg.train.loss == "ce" else "multilabel"
    if cfg.train.loss == "ce" and cache.task not in ("binary", "multiclass"):
        raise ValueError("loss ce needs a single-label dataset (class folders); use bce for multi-label")
    return TrainData(
        cache, tuple(cache.labels[c] for c in cols), targets, make_split(cache.meta, targets, cfg.split), task
    )


def build_optimizer(params, t: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD with momentum."""
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True
        )
    raise ValueError(f"train.optimizer {t.optimizer!r}: expected adam, adamw or sgd")


def build_scheduler(opt: torch.optim.Optimizer, t: TrainConfig):
    """Per-epoch schedule: none, exponential decay, cosine with warm-up, or reduce-on-plateau."""
    if t.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            mode="min" if t.monitor in MINIMISE else "max",
            factor=t.plateau_factor,
            patience=t.plateau_patience,
        )
    if t.schedule not in ("none", "exponential", "cosine"):
        raise ValueError(f"train.schedule {t.schedule!r}: expected none, exponential, cosine or plateau")

    def factor(epoch: int) -> float:
        warm = min(1.0, (epoch + 1) / t.warmup_epochs) if t.warmup_epochs else 1.0
        if t.schedule == "exponential":
            return warm * 0.1 ** (epoch / t.decay_epochs)
        if t.schedule == "cosine":
            span = max(1, t.epochs - t.warmup_epochs)
            return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0, epoch - t.warmup_epochs) / span)))
        return warm

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def train_one_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: LossFn,
    data: TrainData,
    t: TrainConfig,
    epoch: int,
    device: torch.device,
    info: ddp.DistInfo,
) -> dict[str, float]:
    """One pass over this rank's shard of the training split; returns mean loss and throughput."""
    from torch.utils.data import DistributedSampler
    from tqdm.auto import tqdm

    torch.manual_seed(t.seed * 100_003 + epoch)  # dropout draws
    gen = _epoch_generator(t.seed, epoch)
    train_idx = data.split["train"]
    sampler = DistributedSampler(
        range(len(train_idx)), num_replicas=info.world, rank=info.rank, shuffle=True, seed=t.seed
    )
    sampler.set_epoch(epoch)
    order = train_idx[np.fromiter(iter(sampler), dtype=np.int64)]
    n_batches = math.ceil(len(order) / t.batch_size)
    if t.steps_per_epoch:
        n_batches = min(n_batches, t.steps_per_epoch)
    model.train()
    amp = device.type == "cuda" and t.amp
    total, seen, start = 0.0, 0, time.perf_counter()
    bar = tqdm(
        range(n_batches),
        desc=f"epoch {epoch + 1}/{t.epochs}",
        unit="batch",
        leave=False,
        disable=None if (info.main and t.progress) else True,
        dynamic_ncols=True,
    )
    for b in bar:
        x, y = data.batch(order[b * t.batch_size : (b + 1) * t.batch_size], device)
        x = augment_batch(x, gen, rotate=t.rotate, shift=t.shift, scale=t.scale, hflip=t.hflip)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], t.grad_clip)
        opt.step()
        total += float(loss.detach()) * len(x)
        seen += len(x)
        bar.set_postfix(loss=f"{total / seen:.4f}", img_s=f"{seen / (time.perf_counter() - start):,.0f}")
    bar.close()
    secs = time.perf_counter() - start
    return {
        "train_loss": ddp.mean_across(info, total / max(seen, 1)),
        "seconds": secs,
        "img_per_s": ddp.mean_across(info, seen / max(secs, 1e-9)) * info.world,
    }


@torch.no_grad()
def predict(
    model: CXRNet,
    data: TrainData,
    idx: np.ndarray,
    batch_size: int,
    device: torch.device,
    loss_fn: LossFn | None = None,
) -> tuple[np.ndarray, float]:
    """Probabilities (len(idx), L) in the order of ``idx``, and the mean loss when ``loss_fn`` is given."""
    model.eval()
    idx = np.asarray(idx)
    order = np.argsort(idx, kind="stable")
    probs = np.empty((len(idx), len(data.labels)), dtype=np.float32)
    total = 0.0
    for s in range(0, len(idx), batch_size):
        rows = order[s : s + batch_size]
        x, y = data.batch(idx[rows], device)  # batch() sorts; rows are already in sorted-index order
        logits = model(x).float()
        if loss_fn is not None:
            total += float(loss_fn(logits, y)) * len(rows)
        p = torch.softmax(logits, 1) if data.task in ("binary", "multiclass") else torch.sigmoid(logits)
        probs[rows] = p.cpu().numpy()
    return probs, total / max(len(idx), 1)


def evaluate(
    model: CXRNet, data: TrainData, part: str, t: TrainConfig, device: torch.device, loss_fn: LossFn
) -> dict[str, float]:
    """Loss and summary metrics of split ``part``."""
    idx = data.split[part]
    probs, loss = predict(model, data, idx, t.batch_size * 2, device, loss_fn)
    return {"val_loss": loss, **summary_metrics(data.targets[idx], probs, t.threshold)}


def _improved(value: float, best: float | None, monitor: str) -> bool:
    if value != value:  # NaN never improves
        return False
    if best is None:
        return True
    return value < best if monitor in MINIMISE else value > best


def _run_dir(cfg: RunConfig, info: ddp.DistInfo) -> Path:
    if info.main:
        base = Path(cfg.out) / (
            cfg.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model.name.replace(':', '-')}"
        )
        path, k = base, 2
        while path.exists() and any(path.iterdir()):
            path, k = base.with_name(f"{base.name}-{k}"), k + 1
        path.mkdir(parents=True, exist_ok=True)
        run = str(path)
    else:
        run = ""
    return Path(ddp.broadcast(info, run))


def _device(name: str, info: ddp.DistInfo) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def load_run_config(run_dir: Path, overrides: dict | None = None) -> RunConfig:
    """The resolved config saved in a run folder, with optional ``section.key`` overrides."""
    return build_run_config(load_yaml(run_dir / "config.yaml"), overrides)


def fit(
    cfg: RunConfig | None = None,
    *,
    resume: str | Path | None = None,
    overrides: dict | None = None,
    log: Log = print,
) -> Path:
    """Train a model as ``cfg`` says (or continue the run folder ``resume``); return the run folder."""
    info = ddp.init_distributed()
    say: Log = log if info.main else (lambda _msg: None)
    try:
        return _fit(cfg, resume, overrides, info, say)
    finally:
        ddp.shutdown(info)


def _fit(
    cfg: RunConfig | None, resume: str | Path | None, overrides: dict | None, info: ddp.DistInfo, log: Log
) -> Path:
    if resume is not None:
        run_dir = Path(resume)
        cfg = load_run_config(run_dir, overrides)
        ckpt = load_checkpoint(run_dir / "last.pt")
    elif cfg is not None:
        run_dir, ckpt = _run_dir(cfg, info), None
    else:
        raise ValueError("fit needs a RunConfig or a run folder to resume")
    t = cfg.train
    device = _device(t.device, info)
    torch.manual_seed(t.seed)
    data = prepare_data(cfg, info, log)
    if info.main:
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        save_split_manifest(run_dir / "split.csv", data.cache.meta, data.split)
    m = cfg.model
    model = create_model(
        m.name,
        len(data.labels),
        1,
        m.pretrained,
        grey=m.grey,
        transition=m.transition,
        hidden=m.hidden,
        dropout=m.dropout,
    )
    loss_fn = build_loss(t.loss, data.targets[data.split["train"]], gamma=t.focal_gamma, alpha=t.focal_alpha)
    history: list[dict] = list(ckpt["history"]) if ckpt else []
    if ckpt is None and t.bottleneck_epochs:
        from cxrkit.training.bottleneck import train_head_on_features

        history += train_head_on_features(
            model, data, loss_fn, t, device, run_dir if info.main else None, log
        )
    model.freeze(t.freeze if t.freeze != "none" or not t.bottleneck_epochs else "last_n", t.unfreeze_last)
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = build_optimizer([p for p in model.parameters() if p.requires_grad], t)
    sched = build_scheduler(opt, t)
    state = {"best": None, "best_epoch": -1, "bad_epochs": 0, "stopped": False}
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state.update(ckpt["early_stop"])
        start = int(ckpt["epoch"]) + 1
        log(f"resuming {run_dir} at epoch {start + 1}/{t.epochs}")
    best_state = (
        load_checkpoint(run_dir / "best.pt")["model_state"]
        if ckpt and (run_dir / "best.pt").exists()
        else cpu_state(model)
    )
    meta = {
        "model_name": m.name,
        "model_config": dataclasses.asdict(m),
        "labels": list(data.labels),
        "task": data.task,
        "input_size": cfg.prepare.size,
        "config_yaml": cfg.to_yaml(),
    }
    n_train, n_val = len(data.split["train"]), len(data.split["val"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(
        f"model {m.name}: {trainable:,} trainable parameters; {n_train:,} train / {n_val:,} val images; "
        f"{info.world} process(es) on {device}"
    )
    for epoch in range(start, t.epochs):
        if state["stopped"]:
            break
        row = {"epoch": epoch + 1, "stage": "train", "lr": opt.param_groups[0]["lr"]}
        row.update(train_one_epoch(net, opt, loss_fn, data, t, epoch, device, info))
        row.update(evaluate(model, data, "val", t, device, loss_fn))
        value = row["val_loss"] if t.monitor == "loss" else row[t.monitor]
        # ranks' BN running statistics differ slightly after their last local batch: take rank 0's
        # number so every rank makes the same early-stopping and schedule decision (no deadlock)
        value = ddp.broadcast(info, float(value))
        improved = _improved(value, state["best"], t.monitor)
        if improved:
            state.update(best=float(value), best_epoch=epoch + 1, bad_epochs=0)
            best_state = cpu_state(model)
        else:
            state["bad_epochs"] += 1
        state["stopped"] = bool(t.patience and state["bad_epochs"] >= t.patience)
        if t.schedule == "plateau":
            sched.step(value)
        else:
            sched.step()
        history.append(
            {k: float(v) if isinstance(v, (int, float, np.floating)) else v for k, v in row.items()}
        )
        log(
            f"epoch {epoch + 1}/{t.epochs}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
            f"val_auc {row['macro_auc']:.4f}  lr {row['lr']:.2e}  {row['seconds']:.1f}s  "
            f"{row['img_per_s']:,.0f} img/s"
            + ("  *best*" if improved else "")
            + ("  (early stop)" if state["stopped"] else "")
        )
        if info.main:
            if improved:
                save_checkpoint(run_dir / "best.pt", model_state=best_state, epoch=epoch, **meta)
            save_checkpoint(
                run_dir / "last.pt",
                model_state=cpu_state(model),
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                epoch=epoch,
                early_stop=dict(state),
                history=history,
                **meta,
            )
            write_history(run_dir, history)
    model.load_state_dict(best_state)  # restore the best epoch's weights
    if info.main:
        if not (run_dir / "best.pt").exists():
            save_checkpoint(run_dir / "best.pt", model_state=best_state, epoch=-1, **meta)
        write_history(run_dir, history)
        write_summary(run_dir, history, state, t, model)
        if state["best"] is not None:
            log(f"best {t.monitor} {state['best']:.4f} at epoch {state['best_epoch']}; run folder {run_dir}")
    ddp.barrier(info)
    return run_dir


def write_history(run_dir: Path, history: list[dict]) -> None:
    """metrics.csv and curves.png from the per-epoch rows."""
    frame = pd.DataFrame(history)
    frame.to_csv(run_dir / "metrics.csv", index=False)
    from cxrkit.report.curves import plot_training_curves

    plot_training_curves(frame, run_dir / "curves.png")


def write_summary(run_dir: Path, history: list[dict], state: dict, t: TrainConfig, model: nn.Module) -> None:
    """summary.json: the best epoch's validation metrics, training time and model size."""
    import json

    rows = [r for r in history if r.get("stage") == "train"]
    best = next((r for r in rows if r["epoch"] == state["best_epoch"]), rows[-1] if rows else {})
    summary = {
        "monitor": t.monitor,
        "best_value": state["best"],
        "best_epoch": state["best_epoch"],
        "epochs_run": len(rows),
        "stopped_early": state["stopped"],
        "train_seconds": float(sum(r.get("seconds", 0.0) for r in rows)),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "val": {k: v for k, v in best.items() if k not in ("epoch", "stage", "lr", "seconds", "img_per_s")},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
