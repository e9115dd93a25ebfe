"""``fit(RunConfig) -> run folder``: data, split, model, optimiser, epochs, checkpoints, in that order.

A run folder (its file names: ``cxrkit.run.files``) holds ``config.yaml`` (resolved, data paths
absolute), ``split.csv``, ``metrics.csv`` (one row per epoch), ``curves.png``, ``best.pt``,
``last.pt``, ``summary.json`` and, written last from the validation split, ``model.json``
(calibration, thresholds, triage operating point: what prediction needs). Every random draw of
epoch ``e`` comes from seeds derived from (seed, e), so a run is repeatable and a resumed run
continues exactly as an uninterrupted one would. Under torchrun each rank trains on its
DistributedSampler shard, every rank evaluates the validation set, rank 0's monitored value
decides early stopping for all, and rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrkit.config import RunConfig, TrainConfig
from cxrkit.data import build_dataset
from cxrkit.data.folder import patient_fallback_note
from cxrkit.data.shifts import augment_shifts, mixed_shift
from cxrkit.data.splits import save_split_manifest
from cxrkit.data.transforms import InputSpec, to_model_input, tta_views
from cxrkit.evaluate.calibration import logits_to_probs
from cxrkit.evaluate.metrics import summary_metrics
from cxrkit.models.device import resolve_device
from cxrkit.models.net import CXRNet
from cxrkit.outputs import write_csv, write_text
from cxrkit.run import files
from cxrkit.run.checkpoint import cpu_state, load_checkpoint, save_checkpoint
from cxrkit.run.data import (
    Log,
    TrainData,
    absolute_paths,
    build_cache,
    check_start,
    is_ensemble,
    load_run_config,
    locate_cache,
    open_data,
    saved_split,
)
from cxrkit.run.model import build_network, network_spec
from cxrkit.run.package import ModelPackage, build_package, write_package
from cxrkit.training import distributed as ddp
from cxrkit.training.augment import augment_batch
from cxrkit.training.ema import WeightAverage
from cxrkit.training.kfold import fold_config, fold_name, fold_state, write_parent
from cxrkit.training.losses import LossFn, build_loss

MINIMISE = {"loss"}
DIVERGED_STEPS = 10  # this many training steps in a row with a NaN/inf loss: the run has diverged


class TrainingDiverged(ValueError):
    """Training gave no finite validation metric: nothing worth packaging (no model.json is written)."""


CURVES_EVERY_S = 30.0  # curves.png is redrawn at most this often while training (0.4 s a draw) and at the end


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


def photometric_change(t: TrainConfig, epoch: int, batch: int, rank: int = 0):
    """The batch's photometric augmentation (``train.photometric``), seeded by (seed, epoch, batch, rank)."""
    if not t.photometric:
        return None
    rng = np.random.default_rng([t.seed, epoch, batch, rank])
    return lambda images: augment_shifts(images, rng, t.photometric, max_severity=t.photometric_severity)


def input_spec(cfg: RunConfig) -> InputSpec:
    """The input spec a run stores: the cache's size and resize mode, and the intensity standardization."""
    return InputSpec(cfg.prepare.size, cfg.prepare.mode, intensity=cfg.prepare.intensity)  # type: ignore[arg-type]


def train_one_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: LossFn,
    data: TrainData,
    t: TrainConfig,
    epoch: int,
    device: torch.device,
    info: ddp.DistInfo,
    ema: WeightAverage | None = None,
) -> dict[str, float]:
    """One pass over this rank's shard of the training split; returns mean loss and throughput.

    ``ema``: the weight average, updated after every optimiser step. ``diverged`` is 1.0 when the
    loss was NaN/inf for ``DIVERGED_STEPS`` steps in a row; a single process then stops the epoch
    at once (under DDP every rank finishes it, in step).
    """
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
    total, seen, start, bad_run, diverged = 0.0, 0, time.perf_counter(), 0, False
    bar = tqdm(
        range(n_batches),
        desc=f"epoch {epoch + 1}/{t.epochs}",
        unit="batch",
        leave=False,
        disable=None if (info.main and t.progress) else True,
        dynamic_ncols=True,
    )
    for b in bar:
        change = photometric_change(t, epoch, b, info.rank)
        x, y = data.batch(order[b * t.batch_size : (b + 1) * t.batch_size], device, change)
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
        if ema is not None:
            ema.update(model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model)
        value = float(loss.detach())
        bad_run = 0 if math.isfinite(value) else bad_run + 1
        diverged = diverged or bad_run >= DIVERGED_STEPS
        total += value * len(x)
        seen += len(x)
        if diverged and not info.enabled:
            break
        bar.set_postfix(loss=f"{total / seen:.4f}", img_s=f"{seen / (time.perf_counter() - start):,.0f}")
    bar.close()
    secs = time.perf_counter() - start
    return {
        "train_loss": ddp.mean_across(info, total / max(seen, 1)),
        "seconds": secs,
        "img_per_s": ddp.mean_across(info, seen / max(secs, 1e-9)) * info.world,
        "diverged": float(ddp.broadcast(info, float(diverged))),
    }


@torch.no_grad()
def predict_logits(
    model: CXRNet,
    data: TrainData,
    idx: np.ndarray,
    batch_size: int,
    device: torch.device,
    loss_fn: LossFn | None = None,
    tta: int = 0,
    images: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Logits (len(idx), L) in the order of ``idx``, and the mean loss when ``loss_fn`` is given.

    ``tta`` > 1 averages the logits of that many views (``data.transforms.tta_views``), as the
    loaded run predicts; ``images`` (aligned with sorted ``idx``) replace the cached ones.
    """
    model.eval()
    idx = np.asarray(idx)
    order = np.argsort(idx, kind="stable")
    logits = np.empty((len(idx), len(data.labels)), dtype=np.float32)
    total = 0.0
    for s in range(0, len(idx), batch_size):
        rows = order[s : s + batch_size]
        # batch() sorts; rows are already in sorted-index order
        given = None if images is None else images[s : s + batch_size]
        x, y = data.batch(idx[rows], device, None if given is None else (lambda _i, g=given: g))
        if tta > 1:  # averaged in numpy, exactly as RunModel.logits does
            views = tta_views((x[:, 0] * 255).round().to(torch.uint8).cpu().numpy(), tta)
            mean = np.mean([model(to_model_input(v, device)).float().cpu().numpy() for v in views], axis=0)
            out = torch.from_numpy(mean).to(device)
        else:
            out = model(x).float()
        if loss_fn is not None:
            total += float(loss_fn(out, y)) * len(rows)
        logits[rows] = out.cpu().numpy()
    return logits, total / max(len(idx), 1)


def evaluate(
    model: CXRNet,
    data: TrainData,
    part: str,
    t: TrainConfig,
    device: torch.device,
    loss_fn: LossFn,
    corrupted: np.ndarray | None = None,
) -> dict[str, float]:
    """Loss and summary metrics of split ``part``; with ``corrupted`` images, also their ``corrupt_auc``."""
    idx = data.split[part]
    logits, loss = predict_logits(model, data, idx, t.batch_size * 2, device, loss_fn)
    probs = logits_to_probs(logits, data.task)
    row = {"val_loss": loss, **summary_metrics(data.targets[idx], probs, t.threshold, labels=data.labels)}
    if corrupted is not None:
        logits, _ = predict_logits(model, data, np.sort(idx), t.batch_size * 2, device, images=corrupted)
        probs = logits_to_probs(logits, data.task)
        row["corrupt_auc"] = summary_metrics(
            data.targets[np.sort(idx)], probs, t.threshold, labels=data.labels
        )["macro_auc"]
    return row


def corrupted_validation(data: TrainData, t: TrainConfig) -> np.ndarray | None:
    """Validation images each under one acquisition shift (seeded), when ``train.monitor`` is corrupt_auc."""
    if t.monitor != "corrupt_auc":
        return None
    return mixed_shift(np.asarray(data.cache.images[np.sort(data.split["val"])]), seed=t.seed)[0]


def _improved(value: float, best: float | None, monitor: str) -> bool:
    if value != value:  # NaN never improves
        return False
    if best is None:
        return True
    return value < best if monitor in MINIMISE else value > best


def _claim_folder(base: Path, reuse_empty: bool) -> tuple[Path, bool]:
    """A new folder ``base`` (or ``base-2``, ``base-3``...), made atomically; (path, made here).

    ``reuse_empty`` (a name the user chose): an existing empty ``base`` is taken as is. A generated
    (timestamp) name never reuses a folder, so two runs started in the same second get their own.
    """
    path, k = base, 2
    while True:
        try:
            path.mkdir(parents=True)
            return path, True
        except FileExistsError:
            if reuse_empty and path == base and path.is_dir() and not any(path.iterdir()):
                return path, False
        path, k = base.with_name(f"{base.name}-{k}"), k + 1


def _run_dir(cfg: RunConfig, info: ddp.DistInfo) -> tuple[Path, bool]:
    """The new run's folder (rank 0 claims it, every rank gets it) and whether rank 0 created it."""
    made = False
    if info.main:
        base = Path(cfg.out) / (
            cfg.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model.name.replace(':', '-')}"
        )
        path, made = _claim_folder(base, reuse_empty=bool(cfg.name))
        run = str(path)
    else:
        run = ""
    return Path(ddp.broadcast(info, run)), made


def _check_out(out: str | Path) -> None:
    """Refuse, before any cache is built, an ``out`` that is (or lies under) a file."""
    for folder in (Path(out), *Path(out).parents):
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"out: {folder} is a file; expected a folder for run folders")


def _discard_unstarted(run_dir: Path, made: bool) -> None:
    """Remove what a start that failed before its first checkpoint wrote (the folder too if made here)."""
    if (run_dir / files.LAST).exists() or (run_dir / files.BEST).exists():
        return  # a checkpoint is worth keeping (--resume continues from it)
    if made:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for child in run_dir.iterdir():  # the folder was empty before this run: only its own files are here
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


def _resumable(run_dir: Path) -> Path:
    """``run_dir`` when ``--resume`` can continue it; else one line saying what it is not."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no such run folder")
    if not (run_dir / files.CONFIG).is_file():
        raise FileNotFoundError(
            f"--resume {run_dir}: not a run folder (no {files.CONFIG}); give a folder that cxr train wrote"
        )
    return run_dir


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
    """Check the config against the data and build the model, then the cache; only then a run folder.

    A new run's folder appears once the data, labels, model and split are known good, and a start
    that fails before the first checkpoint removes it again. A resumed run keeps its ``split.csv``.
    """
    split_file = None
    if resume is not None:
        run_dir = _resumable(Path(resume))
        cfg = load_run_config(run_dir, overrides)
        if is_ensemble(cfg.split):
            changed = sorted(k for k in overrides or {} if str(k).startswith(("split.", "data.", "prepare.")))
            if changed:  # the finished folds were split and prepared as saved: the rest must be too
                raise ValueError(f"--resume of a K-fold run cannot change {', '.join(changed)}")
            return _fit_kfold(cfg, run_dir, overrides, info, log)
        split_file = saved_split(run_dir)
        ckpt = load_checkpoint(run_dir / files.LAST)
    elif cfg is None:
        raise ValueError("fit needs a RunConfig or a run folder to resume")
    else:
        ckpt = None
        _check_out(cfg.out)
        if is_ensemble(cfg.split):
            return _fit_kfold(cfg, None, overrides, info, log)
    t, m = cfg.train, cfg.model
    device = resolve_device(t.device, info.local_rank)
    ds = build_dataset(cfg.data)
    n_labels = len(check_start(cfg, ds))  # labels and loss fit the data: checked before any cache
    note = patient_fallback_note(ds.meta)
    if note:
        log(note)
    torch.manual_seed(t.seed)
    # the model before the cache: a misspelt model name must not cost a cache build first
    spec = {**dataclasses.asdict(m), "intensity": cfg.prepare.intensity}
    model = build_network(m.name, spec, n_labels, pretrained=m.pretrained)
    cache_path, key = locate_cache(cfg, ds)
    if info.main:
        build_cache(cfg, ds, cache_path, key, log)
    ddp.barrier(info)
    data = open_data(cfg, cache_path, split_file, log)  # a resumed run: its saved split, never a new one
    if resume is not None:
        if info.main:
            write_text(run_dir / files.CONFIG, absolute_paths(cfg).to_yaml())  # with the overrides
        return _train(cfg, run_dir, ckpt, data, model, device, info, log)
    run_dir, made = _run_dir(cfg, info)
    try:
        if info.main:
            write_text(run_dir / files.CONFIG, absolute_paths(cfg).to_yaml())
            save_split_manifest(run_dir / files.SPLIT, data.cache.meta, data.split, data.cache.images)
        return _train(cfg, run_dir, None, data, model, device, info, log)
    except BaseException:
        if info.main:
            _discard_unstarted(run_dir, made)
        raise


def _fit_kfold(
    cfg: RunConfig, parent: Path | None, overrides: dict | None, info: ddp.DistInfo, log: Log
) -> Path:
    """Train (or finish) every fold of a K-fold run, then write the parent ensemble (``training.kfold``)."""
    made = False
    if parent is None:
        parent, made = _run_dir(cfg, info)
        if info.main:  # first, so that --resume PARENT works after an interruption in any fold
            write_text(parent / files.CONFIG, absolute_paths(cfg).to_yaml())
    try:
        for k in range(1, cfg.split.folds + 1):
            state = fold_state(parent, k)
            log(f"fold {k}/{cfg.split.folds}: {'already trained' if state == 'done' else 'training'}")
            if state == "started":
                _fit(None, parent / fold_name(k), overrides, info, log)
            elif state == "new":
                if info.main and (parent / fold_name(k)).exists():  # a start cut short before a checkpoint
                    shutil.rmtree(parent / fold_name(k))
                ddp.barrier(info)
                _fit(fold_config(cfg, parent, k), None, None, info, log)
    except BaseException:
        if (
            made
            and info.main
            and not any(fold_state(parent, k) != "new" for k in range(1, cfg.split.folds + 1))
        ):
            shutil.rmtree(parent, ignore_errors=True)  # nothing worth keeping: no fold has a checkpoint
        raise
    if info.main:
        write_parent(cfg, parent, log, cfg.train.device)
    ddp.barrier(info)
    return parent


def _train(
    cfg: RunConfig,
    run_dir: Path,
    ckpt: dict | None,
    data: TrainData,
    model: CXRNet,
    device: torch.device,
    info: ddp.DistInfo,
    log: Log,
) -> Path:
    """Epochs from the checkpoint ``ckpt`` (or the start) to the end; checkpoints, history, model.json."""
    t, m = cfg.train, cfg.model
    if m.init_head == "from_pretrained" and ckpt is None:
        from cxrkit.models.xrv import init_head_from_pretrained

        matched = init_head_from_pretrained(model, data.labels)
        log(
            f"head: {len(matched)} of {len(data.labels)} outputs start from the published classifier "
            f"({', '.join(matched) or 'none'})"
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
    ema = WeightAverage(model, t.ema, ckpt.get("ema") if ckpt else None) if t.ema else None
    judged = ema.model if ema is not None else model  # what is validated, kept as best and shipped
    corrupted = corrupted_validation(data, t)
    best_state = (
        load_checkpoint(run_dir / files.BEST)["model_state"]
        if ckpt and (run_dir / files.BEST).exists()
        else cpu_state(model)
    )
    meta = {
        "model_name": m.name,
        "model_config": network_spec(dataclasses.asdict(m), model),
        "labels": list(data.labels),
        "task": data.task,
        "input": input_spec(cfg).as_dict(),  # type: ignore[arg-type]
        "config_yaml": cfg.to_yaml(),
    }
    n_train, n_val = len(data.split["train"]), len(data.split["val"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(
        f"model {m.name}: {trainable:,} trainable parameters; {n_train:,} train / {n_val:,} val images; "
        f"{info.world} process(es) on {device}"
    )
    last_plot = time.perf_counter()
    for epoch in range(start, t.epochs):
        if state["stopped"]:
            break
        row = {"epoch": epoch + 1, "stage": "train", "lr": opt.param_groups[0]["lr"]}
        row.update(train_one_epoch(net, opt, loss_fn, data, t, epoch, device, info, ema))
        diverged = bool(row.pop("diverged"))
        row.update(evaluate(judged, data, "val", t, device, loss_fn, corrupted))
        # a non-finite validation loss means NaN/inf weights, which no later epoch repairs
        diverged = bool(ddp.broadcast(info, float(diverged or not math.isfinite(row["val_loss"]))))
        value = row["val_loss"] if t.monitor == "loss" else row[t.monitor]
        # ranks' BN running statistics differ slightly after their last local batch: take rank 0's
        # number so every rank makes the same early-stopping and schedule decision (no deadlock)
        value = ddp.broadcast(info, float(value))
        improved = _improved(value, state["best"], t.monitor)
        if improved:
            state.update(best=float(value), best_epoch=epoch + 1, bad_epochs=0)
            best_state = cpu_state(judged)
        else:
            state["bad_epochs"] += 1
        state["stopped"] = bool(t.patience and state["bad_epochs"] >= t.patience) or diverged
        if t.schedule == "plateau":
            sched.step(value)
        else:
            sched.step()
        history.append(
            {k: float(v) if isinstance(v, (int, float, np.floating)) else v for k, v in row.items()}
        )
        log(
            f"epoch {epoch + 1}/{t.epochs}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
            f"val_auc {row['macro_auc']:.4f}  "
            + (f"corrupt_auc {row['corrupt_auc']:.4f}  " if "corrupt_auc" in row else "")
            + f"lr {row['lr']:.2e}  {row['seconds']:.1f}s  "
            f"{row['img_per_s']:,.0f} img/s"
            + ("  *best*" if improved else "")
            + ("  (early stop)" if state["stopped"] and not diverged else "")
        )
        if diverged:
            log(
                f"training diverged in epoch {epoch + 1}: the loss was NaN/inf for "
                f"{DIVERGED_STEPS} steps in a row, or the validation loss was; stopped "
                f"(lower train.lr, now {t.lr:g}, or set train.grad_clip)"
                + (f"; keeping the best epoch, {state['best_epoch']}" if state["best"] is not None else "")
            )
        if info.main:
            if improved:
                save_checkpoint(run_dir / files.BEST, model_state=best_state, epoch=epoch, **meta)
            save_checkpoint(
                run_dir / files.LAST,
                model_state=cpu_state(model),
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                epoch=epoch,
                early_stop=dict(state),
                history=history,
                ema=ema.state() if ema is not None else None,
                **meta,
            )
            plot = time.perf_counter() - last_plot >= CURVES_EVERY_S
            write_history(run_dir, history, curves=plot)
            last_plot = time.perf_counter() if plot else last_plot
    if not any(math.isfinite(r.get("val_loss", math.nan)) for r in history):
        if info.main:  # the record stays for debugging (metrics.csv, summary.json, last.pt); no model.json
            write_history(run_dir, history)
            write_summary(run_dir, history, state, t, model, diverged=True)
        ddp.barrier(info)
        raise TrainingDiverged(
            f"training diverged: no epoch gave a finite validation metric (run folder {run_dir}: no "
            f"model.json written; lower train.lr, now {t.lr:g}, or set train.grad_clip)"
        )
    model.load_state_dict(best_state)  # restore the best epoch's weights
    # model.json's thresholds must come from the logits a loaded run computes, bit for bit: a loaded
    # run is contiguous, and channels-last convolutions round differently
    model.to(memory_format=torch.contiguous_format)
    if info.main:
        if not (run_dir / files.BEST).exists():
            save_checkpoint(run_dir / files.BEST, model_state=best_state, epoch=-1, **meta)
        write_history(run_dir, history)
        write_summary(run_dir, history, state, t, model)
        write_model_package(run_dir, model, data, cfg, device, log)
        if state["best"] is not None:
            log(f"best {t.monitor} {state['best']:.4f} at epoch {state['best_epoch']}; run folder {run_dir}")
    ddp.barrier(info)
    return run_dir


def write_model_package(
    run_dir: Path, model: CXRNet, data: TrainData, cfg: RunConfig, device: torch.device, log: Log
) -> ModelPackage:
    """Fit calibration, thresholds and the operating point on validation logits; write model.json; log."""
    idx = data.split["val"]
    logits, _ = predict_logits(model, data, idx, cfg.train.batch_size * 2, device, tta=cfg.model.tta)
    pkg = build_package(
        model_name=cfg.model.name,
        model_config=network_spec(dataclasses.asdict(cfg.model), model),
        labels=data.labels,
        task=data.task,
        input_spec=input_spec(cfg),  # type: ignore[arg-type]
        val_logits=logits,
        val_targets=data.targets[idx],
        target_sensitivity=cfg.triage.target_sensitivity,
        triage_score=cfg.triage.score,
    )
    write_package(run_dir, pkg)
    for warning in pkg.validation["warnings"]:
        log(f"warning: {warning}")
    op = pkg.operating_point
    log(
        f"wrote {run_dir / files.PACKAGE}: temperatures fitted on {len(idx):,} validation images "
        f"(ECE {pkg.validation['ece_before']:.3f} -> {pkg.validation['ece_after']:.3f}); triage threshold "
        f"{op.threshold:.6g} for sensitivity {op.target_sensitivity:g} "
        f"({'reached' if op.reached else 'NOT reached'}: validation {op.val_sensitivity:.3f})"
    )
    return pkg


def write_history(run_dir: Path, history: list[dict], curves: bool = True) -> None:
    """metrics.csv (every epoch) and, when ``curves``, curves.png from the per-epoch rows."""
    frame = pd.DataFrame(history)
    write_csv(run_dir / files.HISTORY, frame, index=False)
    if not curves:
        return
    from cxrkit.report.curves import plot_training_curves

    plot_training_curves(frame, run_dir / files.CURVES)


def write_summary(
    run_dir: Path, history: list[dict], state: dict, t: TrainConfig, model: nn.Module, diverged: bool = False
) -> None:
    """summary.json (strict JSON): the best epoch's validation metrics, training time and model size."""
    from cxrkit.outputs import write_json

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
    if diverged:
        summary["diverged"] = "no epoch gave a finite validation metric; no model.json was written"
    write_json(run_dir / files.SUMMARY, summary)
