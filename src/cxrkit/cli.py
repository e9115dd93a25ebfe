"""The ``cxr`` command: parse arguments, build a config, call the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cxrkit import __version__
from cxrkit.config import SOURCES, DataConfig, PrepareConfig, SplitConfig, load_yaml, merge

log = logging.getLogger("cxrkit")


def _add_data_args(p: argparse.ArgumentParser, data_required: bool = False) -> None:
    p.add_argument(
        "data",
        nargs="?" if not data_required else None,
        default=None,
        help="image folder, ChestMNIST .npz, TFRecord shard folder, class folder or cache folder",
    )
    g = p.add_argument_group("data source")
    g.add_argument("--source", choices=SOURCES, help="data source (default: detected from DATA)")
    g.add_argument(
        "--csv", help="NIH Data_Entry_2017 CSV (default: in the folder, else the torchxrayvision copy)"
    )
    g.add_argument("--bbox-csv", dest="bbox_csv", help="NIH BBox_List_2017.csv")
    g.add_argument("--views", help="NIH: comma-separated view positions to keep (e.g. PA)")
    g.add_argument(
        "--image-size",
        dest="size",
        type=int,
        help="phantom image size / ChestMNIST file size (28, 64, 128, 224)",
    )
    g.add_argument("--n", type=int, help="phantoms: number of images")
    g.add_argument("--seed", type=int, help="seed for phantoms and splits")
    g.add_argument(
        "--split-name", dest="split", choices=("all", "train", "val", "test"), help="ChestMNIST split"
    )
    g.add_argument("--config", help="YAML with a `data:` section (CLI flags win)")


def _data_config(args: argparse.Namespace, default_source: str) -> DataConfig:
    from cxrkit.data import detect_source

    doc = load_yaml(args.config).get("data", {}) if getattr(args, "config", None) else {}
    cfg = merge(DataConfig(), doc)
    source = args.source or doc.get("source") or (detect_source(args.data) if args.data else default_source)
    over = {k: getattr(args, k, None) for k in ("csv", "bbox_csv", "views", "size", "n", "seed", "split")}
    return merge(cfg, {**over, "source": source, "path": args.data or doc.get("path")})


def _report_failures(failures: Sequence[tuple[str, str]], limit: int = 20) -> None:
    for where, reason in failures[:limit]:
        print(f"  skipped {where}: {reason}")
    if len(failures) > limit:
        print(f"  ... and {len(failures) - limit} more (see failures.csv)")


def cmd_eda(args: argparse.Namespace) -> int:
    """EDA report of any source; with no DATA, the full NIH metadata shipped with torchxrayvision."""
    from cxrkit.data import build_dataset
    from cxrkit.report.eda import build_eda_report

    cfg = _data_config(args, default_source="nih")
    ds = build_dataset(cfg)
    out = Path(args.out or f"cxr-out/eda-{cfg.source}.html")
    path, s = build_eda_report(ds, out, per_label=args.per_label, seed=cfg.seed)
    print(ds.summary())
    counts = ", ".join(f"{k} {v:,}" for k, v in s["label_counts"].items())
    print(f"images {s['images']:,} | patients {s['patients']:,} | {counts}")
    print(f"multi-label: {s['multi_label']:,} images ({s['multi_label_share_of_abnormal']:.1%} of abnormal)")
    print(f"report: {path}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Build or reuse the preprocessing cache of a source."""
    from cxrkit.data import build_dataset
    from cxrkit.data.cache import prepare_cache

    dcfg = _data_config(args, default_source="phantom")
    pcfg = merge(
        PrepareConfig(),
        {"size": args.size_out, "mode": args.mode, "workers": args.workers, "force": args.force or None},
    )
    ds = build_dataset(dcfg)
    out = Path(args.out or f"cxr-out/cache/{dcfg.source}-{pcfg.size}-{pcfg.mode}")
    res = prepare_cache(
        ds,
        out,
        size=pcfg.size,
        mode=pcfg.mode,  # type: ignore[arg-type]
        workers=pcfg.workers or None,
        force=pcfg.force,
        progress=not args.quiet,
    )
    if res.reused:
        print(f"cache up to date: reused {out} ({res.n_images:,} images, checked in {res.seconds:.3f} s)")
    else:
        rate = res.n_images / max(res.seconds, 1e-9)
        print(
            f"cache built: {out} ({res.n_images:,} images at {pcfg.size}px {pcfg.mode}, "
            f"{res.seconds:.1f} s, {rate:,.0f} img/s)"
        )
    if res.failures:
        print(f"{len(res.failures)} file(s) could not be read and were skipped:")
        _report_failures(res.failures)
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """Make a patient-grouped (or official) split and write its manifest."""
    from cxrkit.data import build_dataset
    from cxrkit.data.splits import (
        patient_split,
        save_split_manifest,
        split_from_column,
        split_summary,
    )

    dcfg = _data_config(args, default_source="phantom")
    scfg = merge(
        SplitConfig(),
        {
            "method": args.method,
            "seed": args.seed,
            **dict(zip(("train", "val", "test"), args.fractions or (None,) * 3, strict=False)),
        },
    )
    ds = build_dataset(dcfg)
    if scfg.method == "official":
        split = split_from_column(ds.meta, targets=ds.targets(), val_fraction=scfg.val, seed=scfg.seed)
    else:
        split = patient_split(ds.meta["patient_id"].to_numpy(), ds.targets(), scfg.fractions(), scfg.seed)
    out = save_split_manifest(args.out or f"cxr-out/split-{dcfg.source}.csv", ds.meta, split)
    print(split_summary(ds.meta, split, ds.labels).to_string())
    print(f"no patient is in two splits (checked). manifest: {out}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Decode each file and print one line: its size and grey range, or why it cannot be read."""
    from cxrkit.data.decode import ImageReadError, read_image
    from cxrkit.data.folder import list_images

    bad = 0
    for path in list_images(args.files):
        try:
            img = read_image(path)
            print(
                f"{path}: ok, {img.shape[1]}x{img.shape[0]} grey, mean {img.mean():.1f}, "
                f"range {img.min()}..{img.max()}"
            )
        except ImageReadError as err:
            bad += 1
            print(f"{err}")
    return 1 if bad else 0


def cmd_download(args: argparse.Namespace) -> int:
    """Download ChestMNIST (.npz, MD5-verified) into a folder."""
    from cxrkit.data.chestmnist import download_chestmnist

    path = download_chestmnist(args.root, args.size, timeout=args.timeout)
    print(f"ChestMNIST {args.size}px ready: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded default, offline: phantoms -> EDA -> split + cache -> train -> evaluate + triage."""
    from cxrkit.config import ModelConfig, RunConfig, TrainConfig
    from cxrkit.data import build_dataset
    from cxrkit.report.eda import build_eda_report
    from cxrkit.training.loop import fit

    t0 = time.perf_counter()
    out = Path(args.out)
    cfg = RunConfig(
        data=DataConfig(
            source="phantom", n=args.n, size=args.image_size, seed=args.seed, images_per_patient=2
        ),
        prepare=PrepareConfig(size=args.image_size),
        split=SplitConfig(train=0.7, val=0.15, test=0.15, seed=args.seed),
        model=ModelConfig(name="cnn4_32_64_128_256_bn"),
        train=TrainConfig(
            epochs=args.epochs,
            lr=2e-3,
            schedule="cosine",
            rotate=0,
            shift=0,
            scale=0,
            seed=args.seed,
            patience=0,
        ),
        out=str(out / "runs"),
        name="phantom-cnn",
        cache_dir=str(out / "cache"),
    )
    ds = build_dataset(cfg.data)
    report, _ = build_eda_report(ds, out / "eda.html", title="cxrkit demo — phantom EDA")
    print(f"1/3 data: {ds.summary()} (synthetic phantoms, {args.image_size}px); EDA report: {report}")
    print(f"2/3 training {cfg.model.name} for {args.epochs} epochs on a patient-grouped split:")
    run = fit(cfg, log=lambda msg: print("    " + msg))
    import json

    val = json.loads((run / "summary.json").read_text())["val"]
    print(
        f"validation: macro ROC-AUC {val['macro_auc']:.3f}, micro ROC-AUC {val['micro_auc']:.3f}, "
        f"macro F1 at 0.5 {val['macro_f1']:.3f}"
    )
    print(f"run folder: {run} (config.yaml, split.csv, metrics.csv, curves.png, best.pt)")
    from cxrkit.evaluate.evaluation import EvalConfig, evaluate_run

    print("3/3 evaluating on the held-out test split (thresholds and triage point tuned on validation):")
    evaluate_run(run, EvalConfig(n_boot=args.bootstrap), log=lambda msg: print("    " + msg))
    print(
        f"done in {time.perf_counter() - t0:.0f} s. Open {run / 'eval-test' / 'report.html'}. "
        "Next: `cxr eda` (real NIH metadata), `cxr train --config configs/kermany.yaml`, "
        "`cxr triage RUN IMAGES...`."
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model: YAML config, then SECTION.KEY=VALUE overrides; or continue a run with --resume."""
    from cxrkit.config import build_run_config, parse_overrides
    from cxrkit.training.loop import fit

    over = parse_overrides(args.overrides)
    for key in ("out", "name"):
        if getattr(args, key):
            over[key] = getattr(args, key)
    if args.resume:
        run = fit(resume=args.resume, overrides=over)
    else:
        doc = load_yaml(args.config) if args.config else {}
        run = fit(build_run_config(doc, over))
    print(f"run folder: {run}")
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    """Run every config of a grid and write one comparison table (CSV, Markdown, HTML)."""
    from cxrkit.config import parse_overrides
    from cxrkit.training.experiments import run_grid

    root = run_grid(args.grid, out=args.out, overrides=parse_overrides(args.overrides))
    print((root / "comparison.md").read_text())
    print(f"comparison: {root / 'comparison.csv'}, {root / 'comparison.html'}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List the registered models (any timm model also works as timm:<name>)."""
    from cxrkit.models import list_models, model_info

    for name in list_models():
        info = model_info(name)
        print(
            f"{name:24s} {info.family:12s} {'ImageNet' if info.has_pretrained else '-':9s} {info.description}"
        )
    print(
        "timm:<name>              timm         ImageNet  any timm model, e.g. timm:xception41, "
        "timm:convnext_tiny"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cxr`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="cxr", description="cxrkit: chest X-ray classification toolkit")
    parser.add_argument("--version", action="version", version=f"cxrkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo", help="run the embedded default end to end (phantoms, offline)", description=cmd_demo.__doc__
    )
    p.add_argument("--out", default="cxr-out/demo", help="output folder")
    p.add_argument("--n", type=int, default=2000, help="number of phantom images")
    p.add_argument("--image-size", type=int, default=64, help="phantom image size")
    p.add_argument("--epochs", type=int, default=8, help="training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=500, help="patient-bootstrap replicates for the CIs")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eda", help="exploratory data analysis report (HTML)", description=cmd_eda.__doc__)
    _add_data_args(p)
    p.add_argument("--out", help="report path (default cxr-out/eda-SOURCE.html)")
    p.add_argument("--per-label", type=int, default=6, help="sample images per label in the grid")
    p.set_defaults(func=cmd_eda)

    p = sub.add_parser(
        "prepare", help="decode once into a memory-mapped cache", description=cmd_prepare.__doc__
    )
    _add_data_args(p)
    p.add_argument("--out", help="cache folder (default cxr-out/cache/SOURCE-SIZE-MODE)")
    p.add_argument("--size", dest="size_out", type=int, help="cached image size in pixels (default 224)")
    p.add_argument(
        "--mode", choices=("pad", "crop"), help="pad: keep aspect, black borders (default); crop: centre crop"
    )
    p.add_argument("--workers", type=int, help="decoding processes (default: one per core)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "split",
        help="patient-grouped or official split, written as a manifest",
        description=cmd_split.__doc__,
    )
    _add_data_args(p)
    p.add_argument("--method", choices=("patient", "official"), help="patient (default) or official")
    p.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        help="split fractions (default 0.7 0.1 0.2)",
    )
    p.add_argument("--out", help="manifest CSV (default cxr-out/split-SOURCE.csv)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser(
        "inspect", help="check that image files decode; one line per file", description=cmd_inspect.__doc__
    )
    p.add_argument("files", nargs="+", help="PNG/JPEG/DICOM files or folders")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "train",
        help="train a model (config YAML + overrides), or resume a run",
        description=cmd_train.__doc__,
    )
    p.add_argument("--config", help="run config YAML (sections data, prepare, split, model, train)")
    p.add_argument(
        "overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="e.g. train.epochs=5 model.name=resnet18"
    )
    p.add_argument("--resume", help="run folder to continue from its last.pt")
    p.add_argument("--out", help="parent folder of run folders (default runs/)")
    p.add_argument("--name", help="run folder name (default: time and model)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "experiments",
        help="run a grid of configs and compare them in one table",
        description=cmd_experiments.__doc__,
    )
    p.add_argument("grid", help="grid YAML (base config + runs with overrides)")
    p.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="applied to every run")
    p.add_argument("--out", help="output folder (default: the grid's out, else runs/GRID)")
    p.set_defaults(func=cmd_experiments)

    from cxrkit.cli_eval import add_eval_commands
    from cxrkit.cli_explain import add_explain_commands

    add_eval_commands(sub)
    add_explain_commands(sub)

    p = sub.add_parser("models", help="list registered models", description=cmd_models.__doc__)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("download", help="download a data set (ChestMNIST)", description=cmd_download.__doc__)
    p.add_argument("dataset", choices=("chestmnist",))
    p.add_argument("--size", type=int, default=28, choices=(28, 64, 128, 224))
    p.add_argument("--root", default="data", help="folder to save into")
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    p.set_defaults(func=cmd_download)
    return parser


def _configure_logging(verbose: bool) -> None:
    """cxrkit's own messages to stderr as ``cxr: ...``; other libraries' logging is left alone."""
    if not any(getattr(h, "_cxr", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("cxr: %(message)s"))
        handler._cxr = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cxr``: known errors become one line on stderr and exit status 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # SECTION.KEY=VALUE overrides may also come after options
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _configure_logging(args.verbose)
    from cxrkit.data.cache import CacheError
    from cxrkit.data.decode import ImageReadError

    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, ImageReadError, CacheError, KeyError) as err:
        print(f"cxr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cxr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
