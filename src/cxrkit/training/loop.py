"""``fit(RunConfig) -> run folder``: data, split, model, optimiser, epochs, checkpoints, in that order.

A run folder (its file names: ``cxrkit.run.files``) holds ``config.yaml`` (resolved, data paths
absolute), ``split.csv``, ``history.csv`` (one row per epoch), ``curves.png``, ``best.pt``,
``last.pt``, ``summary.json`` and, written last from the validation split, ``model.json``
(calibration, thresholds, triage operating point: what prediction needs); a fine-tuned run
(``init_from``, ``training.finetune``) also ``init.json``, naming its parent. Every random draw of
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
import torch
from torch import nn

from cxrkit.config import RunConfig, TrainConfig
from cxrkit.data import build_dataset
from cxrkit.data.folder import patient_fallback_note
from cxrkit.data.shifts import augment_shifts
from cxrkit.data.splits import save_split_manifest
from cxrkit.models.device import resolve_device
from cxrkit.models.net import CXRNet
from cxrkit.outputs import write_text
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
from cxrkit.run.lineage import write_lineage
from cxrkit.run.model import build_network, network_spec
from cxrkit.training import distributed as ddp
from cxrkit.training.augment import augment_batch
from cxrkit.training.ema import WeightAverage
from cxrkit.training.finetune import (
    Parent,
    check_finetune,
    check_task,
    compare_labels,
    lineage_of,
    load_parent,
    resumed_parent,
)
from cxrkit.training.folders import check_out, discard_unstarted, new_run_dir, resumable
from cxrkit.training.kfold import fold_config, fold_name, fold_state, write_parent
from cxrkit.training.losses import LossFn, build_loss
from cxrkit.training.optim import build_optimizer, build_scheduler
from cxrkit.training.record import input_spec, write_history, write_model_package, write_summary
from cxrkit.training.scoring import corrupted_validation, evaluate
from cxrkit.training.stopping import EarlyStopping, epoch_seed

DIVERGED_STEPS = 10  # this many training steps in a row with a NaN/inf loss: the run has diverged


class TrainingDiverged(ValueError):
    """Training gave no finite validation metric: nothing worth packaging (no model.json is written)."""


CURVES_EVERY_S = 30.0  # curves.png is redrawn at most this often while training (0.4 s a draw) and at the end


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def photometric_change(t: TrainConfig, epoch: int, batch: int, rank: int = 0):
    """The batch's photometric augmentation (``train.photometric``), seeded by (seed, epoch, batch, rank)."""
    if not t.photometric:
        return None
    rng = np.random.default_rng([t.seed, epoch, batch, rank])
    return lambda images: augment_shifts(images, rng, t.photometric, max_severity=t.photometric_severity)


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

    torch.manual_seed(epoch_seed(t.seed, epoch))  # dropout draws
    gen = _epoch_generator(t.seed, epoch)
    train_idx = data.partition["train"]
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
            ema.update(ddp.unwrap(model))
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


def fit(
    cfg: RunConfig | None = None,
    *,
    resume: str | Path | None = None,
    overrides: dict | None = None,
    log: Log = print,
    init_from: str | Path | Parent | None = None,
) -> Path:
    """Train a model as ``cfg`` says (or continue the run folder ``resume``); return the run folder.

    ``init_from``: a finished run (or its ``load_parent``) whose best weights, labels and input the new
    run starts from (fine-tuning; ``cfg`` from ``training.finetune.finetune_config``).
    """
    info = ddp.init_distributed()
    say: Log = log if info.main else (lambda _msg: None)
    try:
        return _fit(cfg, resume, overrides, info, say, init_from)
    finally:
        ddp.shutdown(info)


def _fit(
    cfg: RunConfig | None,
    resume: str | Path | None,
    overrides: dict | None,
    info: ddp.DistInfo,
    log: Log,
    init_from: str | Path | Parent | None = None,
) -> Path:
    """Check the config against the data and build the model, then the cache; only then a run folder.

    A new run's folder appears once the data, labels, model and split are known good, and a start
    that fails before the first checkpoint removes it again. A resumed run keeps its ``split.csv``.
    A fine-tuned run (``init_from``, or resumed with its ``init.json``) has its parent's network and labels.
    """
    split_file, parent = None, None
    if resume is not None and init_from is not None:
        raise ValueError("--resume continues a run; --init-from starts a new one: give one of them")
    if resume is not None:
        run_dir = resumable(Path(resume))
        cfg = load_run_config(run_dir, overrides)
        if is_ensemble(cfg.partition):
            changed = sorted(
                k for k in overrides or {} if str(k).startswith(("partition.", "split.", "data.", "prepare."))
            )
            if changed:  # the finished folds were split and prepared as saved: the rest must be too
                raise ValueError(f"--resume of a K-fold run cannot change {', '.join(changed)}")
            return _fit_kfold(cfg, run_dir, overrides, info, log)
        split_file = saved_split(run_dir)
        ckpt = load_checkpoint(run_dir / files.LAST)
        parent = resumed_parent(run_dir)
    elif cfg is None:
        raise ValueError("fit needs a RunConfig or a run folder to resume")
    else:
        ckpt = None
        check_out(cfg.out)
        if init_from is not None:
            parent = init_from if isinstance(init_from, Parent) else load_parent(init_from)
            check_finetune(cfg, parent)
        if is_ensemble(cfg.partition):
            return _fit_kfold(cfg, None, overrides, info, log)
    t, m = cfg.train, cfg.model
    device = resolve_device(t.device, info.local_rank)
    ds = build_dataset(cfg.data)
    n_labels = len(check_start(cfg, ds))  # labels and loss fit the data: checked before any cache
    if parent is not None:
        missing, dropped = compare_labels(parent, tuple(ds.labels), log)
    note = patient_fallback_note(ds.meta)
    if note:
        log(note)
    torch.manual_seed(t.seed)
    # the model before the cache: a misspelt model name must not cost a cache build first
    spec = {**dataclasses.asdict(m), "intensity": cfg.prepare.intensity}
    if parent is not None:
        model = parent.network()
        if parent.state is not None:
            log(f"starting from {parent.path} (best.pt sha256 {parent.digest[:12]}…): its weights and labels")
    else:
        model = build_network(m.name, spec, n_labels, pretrained=m.pretrained)
    cache_path, key = locate_cache(cfg, ds)
    if info.main:
        build_cache(cfg, ds, cache_path, key, log)
    ddp.barrier(info)
    # a resumed run: its saved split, never a new one; a fine-tuned run: its parent's labels, in their order
    data = open_data(cfg, cache_path, split_file, log, parent.labels if parent is not None else None)
    if parent is not None:
        check_task(parent, data)
    if resume is not None:
        if info.main:
            write_text(run_dir / files.CONFIG, absolute_paths(cfg).to_yaml())  # with the overrides
        return _train(cfg, run_dir, ckpt, data, model, device, info, log)
    run_dir, made = new_run_dir(cfg, info)
    try:
        if info.main:
            write_text(run_dir / files.CONFIG, absolute_paths(cfg).to_yaml())
            save_split_manifest(run_dir / files.SPLIT, data.cache.meta, data.partition, data.cache.images)
            if parent is not None:
                write_lineage(run_dir, lineage_of(parent, missing, dropped))
        return _train(cfg, run_dir, None, data, model, device, info, log)
    except BaseException:
        if info.main:
            discard_unstarted(run_dir, made)
        raise


def _fit_kfold(
    cfg: RunConfig, parent: Path | None, overrides: dict | None, info: ddp.DistInfo, log: Log
) -> Path:
    """Train (or finish) every fold of a K-fold run, then write the parent ensemble (``training.kfold``)."""
    made = False
    if parent is None:
        parent, made = new_run_dir(cfg, info)
        if info.main:  # first, so that --resume PARENT works after an interruption in any fold
            write_text(parent / files.CONFIG, absolute_paths(cfg).to_yaml())
    try:
        for k in range(1, cfg.partition.folds + 1):
            state = fold_state(parent, k)
            log(f"fold {k}/{cfg.partition.folds}: {'already trained' if state == 'done' else 'training'}")
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
            and not any(fold_state(parent, k) != "new" for k in range(1, cfg.partition.folds + 1))
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
    t = cfg.train
    loss_fn = build_loss(
        t.loss, data.targets[data.partition["train"]], gamma=t.focal_gamma, alpha=t.focal_alpha
    )
    history = (
        list(ckpt["history"]) if ckpt else _first_stage(cfg, data, model, loss_fn, device, run_dir, info, log)
    )
    net, opt, sched = _setup(model, t, device, info)
    stop = EarlyStopping.from_state(t.monitor, t.patience, ckpt["early_stop"] if ckpt else None)
    start = _restore(ckpt, model, opt, sched) if ckpt else 0
    if ckpt:
        log(f"resuming {run_dir} at epoch {start + 1}/{t.epochs}")
    ema = WeightAverage(model, t.ema, ckpt.get("ema") if ckpt else None) if t.ema else None
    judged = ema.model if ema is not None else model  # what is validated, kept as best and shipped
    corrupted = corrupted_validation(data, t)
    resumed_best = ckpt and (run_dir / files.BEST).exists()
    best_state = load_checkpoint(run_dir / files.BEST)["model_state"] if resumed_best else cpu_state(model)
    meta = _checkpoint_meta(cfg, data, model)
    _log_start(cfg, data, model, device, info, log)
    last_plot = time.perf_counter()
    for epoch in range(start, t.epochs):
        if stop.stopped:
            break
        row = {"epoch": epoch + 1, "stage": "train", "lr": opt.param_groups[0]["lr"]}
        row.update(train_one_epoch(net, opt, loss_fn, data, t, epoch, device, info, ema))
        diverged = bool(row.pop("diverged"))
        row.update(evaluate(judged, data, "val", t, device, loss_fn, corrupted))
        # a non-finite validation loss means NaN/inf weights, which no later epoch repairs
        diverged = bool(ddp.broadcast(info, float(diverged or not math.isfinite(row["val_loss"]))))
        # ranks' BN running statistics differ slightly after their last local batch: take rank 0's
        # number so every rank makes the same early-stopping and schedule decision (no deadlock)
        value = ddp.broadcast(info, float(row["val_loss"] if t.monitor == "loss" else row[t.monitor]))
        improved = stop.update(value, epoch + 1, diverged)
        best_state = cpu_state(judged) if improved else best_state
        if t.schedule == "plateau":
            sched.step(value)
        else:
            sched.step()
        history.append(
            {k: float(v) if isinstance(v, (int, float, np.floating)) else v for k, v in row.items()}
        )
        log(epoch_line(row, t, improved, stop, diverged))
        if info.main:
            state = {
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "early_stop": stop.state(),
            }
            state["ema"] = ema.state() if ema is not None else None
            best = best_state if improved else None
            last_plot = _save_epoch(run_dir, epoch, model, best, state, history, meta, last_plot)
    return _finish(cfg, run_dir, data, model, best_state, stop, history, meta, device, info, log)


def _first_stage(
    cfg: RunConfig,
    data: TrainData,
    model: CXRNet,
    loss_fn: LossFn,
    device: torch.device,
    run_dir: Path,
    info: ddp.DistInfo,
    log: Log,
) -> list[dict]:
    """Before the first epoch of a new run: the head from published weights, the bottleneck stage."""
    t = cfg.train
    if cfg.model.init_head == "from_pretrained":
        from cxrkit.models.xrv import init_head_from_pretrained

        matched = init_head_from_pretrained(model, data.labels)
        log(
            f"head: {len(matched)} of {len(data.labels)} outputs start from the published classifier "
            f"({', '.join(matched) or 'none'})"
        )
    if not t.bottleneck_epochs:
        return []
    from cxrkit.training.bottleneck import train_head_on_features

    return train_head_on_features(model, data, loss_fn, t, device, run_dir if info.main else None, log)


def _setup(model: CXRNet, t: TrainConfig, device: torch.device, info: ddp.DistInfo):
    """(the network to train, DDP-wrapped under torchrun; its optimiser; its schedule), layers frozen."""
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
    return net, opt, build_scheduler(opt, t)


def _restore(ckpt: dict, model: CXRNet, opt: torch.optim.Optimizer, sched) -> int:
    """Load a checkpoint's weights, optimiser and schedule; the epoch to continue from (0-based)."""
    model.load_state_dict(ckpt["model_state"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    return int(ckpt["epoch"]) + 1


def _checkpoint_meta(cfg: RunConfig, data: TrainData, model: CXRNet) -> dict:
    """What every checkpoint carries besides the weights: model name and spec, labels, task, input, config."""
    return {
        "model_name": cfg.model.name,
        "model_config": network_spec(dataclasses.asdict(cfg.model), model),
        "labels": list(data.labels),
        "task": data.task,
        "input": input_spec(cfg).as_dict(),  # type: ignore[arg-type]
        "config_yaml": cfg.to_yaml(),
    }


def _log_start(
    cfg: RunConfig, data: TrainData, model: CXRNet, device: torch.device, info: ddp.DistInfo, log: Log
) -> None:
    n_train, n_val = len(data.partition["train"]), len(data.partition["val"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(
        f"model {cfg.model.name}: {trainable:,} trainable parameters; {n_train:,} train / {n_val:,} val "
        f"images; {info.world} process(es) on {device}"
    )


def epoch_line(row: dict, t: TrainConfig, improved: bool, stop: EarlyStopping, diverged: bool) -> str:
    """The one log line of an epoch (and, when it diverged, why training stopped)."""
    line = (
        f"epoch {row['epoch']}/{t.epochs}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
        f"val_auc {row['macro_auc']:.4f}  "
        + (f"corrupt_auc {row['corrupt_auc']:.4f}  " if "corrupt_auc" in row else "")
        + f"lr {row['lr']:.2e}  {row['seconds']:.1f}s  {row['img_per_s']:,.0f} img/s"
        + ("  *best*" if improved else "")
        + ("  (early stop)" if stop.stopped and not diverged else "")
    )
    if diverged:
        line += (
            f"\ntraining diverged in epoch {row['epoch']}: the loss was NaN/inf for {DIVERGED_STEPS} steps "
            f"in a row, or the validation loss was; stopped (lower train.lr, now {t.lr:g}, or set "
            "train.grad_clip)"
            + (f"; keeping the best epoch, {stop.best_epoch}" if stop.best is not None else "")
        )
    return line


def _save_epoch(
    run_dir: Path,
    epoch: int,
    model: CXRNet,
    best_state: dict | None,
    state: dict,
    history: list[dict],
    meta: dict,
    last_plot: float,
) -> float:
    """best.pt (when the epoch improved), last.pt, history.csv and now and then curves.png; the plot time."""
    if best_state is not None:
        save_checkpoint(run_dir / files.BEST, model_state=best_state, epoch=epoch, **meta)
    save_checkpoint(
        run_dir / files.LAST, model_state=cpu_state(model), epoch=epoch, history=history, **state, **meta
    )
    plot = time.perf_counter() - last_plot >= CURVES_EVERY_S
    write_history(run_dir, history, curves=plot)
    return time.perf_counter() if plot else last_plot


def _finish(
    cfg: RunConfig,
    run_dir: Path,
    data: TrainData,
    model: CXRNet,
    best_state: dict,
    stop: EarlyStopping,
    history: list[dict],
    meta: dict,
    device: torch.device,
    info: ddp.DistInfo,
    log: Log,
) -> Path:
    """The best weights restored, then best.pt, history, summary and model.json; a diverged run refused."""
    t = cfg.train
    no_loss = not any(math.isfinite(r.get("val_loss", math.nan)) for r in history)
    if no_loss or (t.epochs > 0 and stop.best is None):  # nothing finite to keep: the start is no model
        if info.main:  # the record stays for debugging (history.csv, summary.json, last.pt); no model.json
            write_history(run_dir, history)
            write_summary(run_dir, history, stop, t, model, diverged=True)
        ddp.barrier(info)
        why = (
            f"lower train.lr, now {t.lr:g}, or set train.grad_clip"
            if no_loss
            else f"every epoch's validation {t.monitor} was NaN (does validation hold both classes?)"
        )
        raise TrainingDiverged(
            f"training diverged: no epoch gave a finite validation metric (run folder {run_dir}: no "
            f"model.json written; {why}; start a new run: --resume would continue these weights)"
        )
    model.load_state_dict(best_state)  # restore the best epoch's weights
    # model.json's thresholds must come from the logits a loaded run computes, bit for bit: a loaded
    # run is contiguous, and channels-last convolutions round differently
    model.to(memory_format=torch.contiguous_format)
    if info.main:
        if not (run_dir / files.BEST).exists():
            save_checkpoint(run_dir / files.BEST, model_state=best_state, epoch=-1, **meta)
        write_history(run_dir, history)
        write_summary(run_dir, history, stop, t, model)
        write_model_package(run_dir, model, data, cfg, device, log)
        if stop.best is not None:
            log(f"best {t.monitor} {stop.best:.4f} at epoch {stop.best_epoch}; run folder {run_dir}")
    ddp.barrier(info)
    return run_dir
