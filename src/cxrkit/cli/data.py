"""``cxr eda``, ``prepare``, ``split``, ``inspect`` and ``download``: parse, build the config, call."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cxrkit.cli.options import add_modality_argument
from cxrkit.config import SOURCES, DataConfig, PartitionConfig, PrepareConfig, RunConfig, load_yaml, merge

DATA_HELP = "image folder, ChestMNIST .npz, TFRecord shard folder, class folder or cache folder"


def add_data_args(
    p: argparse.ArgumentParser, data_required: bool = False, seed: bool = True, positional: bool = True
) -> None:
    """The DATA argument (unless ``positional`` is False: the command reads it its own way) and the
    data-source flags (shared by every command that reads a data set)."""
    if positional:
        p.add_argument("data", nargs="?" if not data_required else None, default=None, help=DATA_HELP)
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
    if seed:
        g.add_argument("--seed", type=int, help="seed for phantoms and splits")
    g.add_argument(
        "--split-name", dest="split", choices=("all", "train", "val", "test"), help="ChestMNIST split"
    )
    g.add_argument("--config", help="YAML with a `data:` section (CLI flags win)")


def data_config(args: argparse.Namespace, default_source: str) -> DataConfig:
    """The DataConfig of ``add_data_args``' flags over the ``--config`` YAML's data section."""
    from cxrkit.data import detect_source

    doc = (load_yaml(args.config).get("data") or {}) if getattr(args, "config", None) else {}
    try:
        cfg = merge(DataConfig(), doc)
    except ValueError as err:
        raise ValueError(f"{args.config}: {err}") from None
    source = args.source or doc.get("source") or (detect_source(args.data) if args.data else default_source)
    over = {k: getattr(args, k, None) for k in ("csv", "bbox_csv", "views", "size", "n", "seed", "split")}
    return merge(cfg, {**over, "source": source, "path": args.data or doc.get("path")})


def check_out_file(out: Path, kind: Literal["file", "folder"]) -> Path:
    """``out`` once its folder exists and is writable and nothing of the other kind is in the way.

    Checked before the data is read, so a bad ``--out`` fails at once with one line naming it.
    """
    from cxrkit.outputs import make_out_dir

    make_out_dir(out.parent)
    if kind == "folder" and out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is a file, expected a folder")
    if kind == "file" and out.is_dir():
        raise IsADirectoryError(f"{out}: is a folder, expected a file name to write")
    return out


def _report_failures(failures: Sequence[tuple[str, str]], limit: int = 20) -> None:
    for where, reason in failures[:limit]:
        print(f"  skipped {where}: {reason}")
    if len(failures) > limit:
        print(f"  ... and {len(failures) - limit} more (see failures.csv)")


def cmd_eda(args: argparse.Namespace) -> int:
    """EDA report of any source; with no DATA, the full NIH metadata shipped with torchxrayvision."""
    from cxrkit.data import build_dataset
    from cxrkit.report.eda import build_eda_report

    cfg = data_config(args, default_source="nih")
    out = check_out_file(Path(args.out or f"cxr-out/eda-{cfg.source}.html"), "file")
    ds = build_dataset(cfg)
    if not len(ds):
        raise ValueError(f"{cfg.path or cfg.source}: no images or metadata rows to describe")
    path, s = build_eda_report(ds, out, per_label=args.per_label, seed=cfg.seed)
    print(ds.summary())
    print(eda_headline(s))
    print(f"report: {path}")
    return 0


def eda_headline(s: dict) -> str:
    """The EDA summary in a line or two: images, patients, label counts and multi-label share."""
    head = f"images {s['images']:,} | patients {s['patients']:,}"
    if not s["label_counts"]:
        return f"{head} | no labels (unlabelled images: label sections left out of the report)"
    counts = ", ".join(f"{k} {v:,}" for k, v in s["label_counts"].items())
    share = s["multi_label_share_of_abnormal"]
    shown = f"{share:.1%} of abnormal" if share == share else "no abnormal images"
    return f"{head} | {counts}\nmulti-label: {s['multi_label']:,} images ({shown})"


def cmd_prepare(args: argparse.Namespace) -> int:
    """Build or reuse the preprocessing cache of a source."""
    from cxrkit.data import build_dataset
    from cxrkit.run.data import build_cache, locate_cache

    dcfg = data_config(args, default_source="phantom")
    pcfg = merge(
        PrepareConfig(),
        {"size": args.size_out, "mode": args.mode, "workers": args.workers, "force": args.force or None},
    )
    ds = build_dataset(dcfg)
    cfg = RunConfig(data=dcfg, prepare=pcfg, cache_dir=args.cache_dir)
    # the location `cxr train` looks in (same cache_dir, source, size, mode and key): training reuses it
    out, key = locate_cache(cfg, ds)
    out = check_out_file(Path(args.out) if args.out else out, "folder")
    res = build_cache(cfg, ds, out, key, log=lambda _m: None, progress=not args.quiet)
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
    from cxrkit.data.folder import patient_fallback_note
    from cxrkit.data.splits import (
        patient_split,
        save_split_manifest,
        split_from_column,
        split_summary,
    )

    dcfg = data_config(args, default_source="phantom")
    scfg = merge(
        PartitionConfig(),
        {
            "method": args.method,
            "seed": args.seed,
            **dict(zip(("train", "val", "test"), args.fractions or (None,) * 3, strict=False)),
        },
    )
    out = check_out_file(Path(args.out or f"cxr-out/split-{dcfg.source}.csv"), "file")
    ds = build_dataset(dcfg)
    if scfg.method == "official":
        split = split_from_column(ds.meta, targets=ds.targets(), val_fraction=scfg.val, seed=scfg.seed)
    else:
        split = patient_split(ds.meta["patient_id"].to_numpy(), ds.targets(), scfg.fractions(), scfg.seed)
    out = save_split_manifest(out, ds.meta, split)
    print(split_summary(ds.meta, split, ds.labels).to_string())
    note = patient_fallback_note(ds.meta)
    if note:
        print(note)
    print(f"no patient is in two splits (checked). manifest: {out}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Decode each file and print one line: its size and grey range, or why it cannot be read or assessed."""
    from cxrkit.data.assess import assessment_problem
    from cxrkit.data.decode import ImageReadError, read_image

    found, empty = images_of(args.files)
    if not found:
        raise ValueError(f"no PNG/JPEG/DICOM images in {', '.join(map(str, args.files))}")
    for folder in empty:
        print(f"{folder}: no PNG/JPEG/DICOM images in this folder")
    bad = len(empty)
    for path in found:
        try:
            img = read_image(path, accept_missing_modality=args.accept_missing_modality)
            problem = assessment_problem(img)  # what predict, triage and the service would say
            bad += problem is not None
            print(
                f"{path}: {'NOT ASSESSABLE' if problem else 'ok'}, {img.shape[1]}x{img.shape[0]} grey, "
                f"mean {img.mean():.1f}, range {img.min()}..{img.max()}" + (f": {problem}" if problem else "")
            )
        except ImageReadError as err:
            bad += 1
            print(f"{err}")
    return 1 if bad else 0


def images_of(items: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The image files among ``items`` (folders searched), and the folders that hold none."""
    from cxrkit.data.folder import list_images

    found: list[Path] = []
    empty: list[str] = []
    for item in items:
        files = list_images(item)
        found.extend(files)
        if not files:
            empty.append(item)
    return found, empty


def cmd_download(args: argparse.Namespace) -> int:
    """Download ChestMNIST (.npz, MD5-verified) into a folder."""
    from cxrkit.data.chestmnist import download_chestmnist

    path = download_chestmnist(args.root, args.size, timeout=args.timeout)
    print(f"ChestMNIST {args.size}px ready: {path}")
    return 0


def add_data_commands(sub) -> None:
    """Register eda, prepare, split, inspect and download on the ``cxr`` subparsers."""
    p = sub.add_parser("eda", help="exploratory data analysis report (HTML)", description=cmd_eda.__doc__)
    add_data_args(p)
    p.add_argument("--out", help="report path (default cxr-out/eda-SOURCE.html)")
    p.add_argument("--per-label", type=int, default=6, help="sample images per label in the grid")
    p.set_defaults(func=cmd_eda)

    p = sub.add_parser(
        "prepare", help="decode once into a memory-mapped cache", description=cmd_prepare.__doc__
    )
    add_data_args(p)
    p.add_argument(
        "--cache-dir",
        default=RunConfig().cache_dir,
        help="parent of cache folders, as a run config's cache_dir (default cxr-out/cache); the folder "
        "is SOURCE-SIZEMODE-KEY, where `cxr train` with the same data looks",
    )
    p.add_argument("--out", help="exact cache folder instead (then train with data.source: cache)")
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
    add_data_args(p)
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
    add_modality_argument(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("download", help="download a data set (ChestMNIST)", description=cmd_download.__doc__)
    p.add_argument("dataset", choices=("chestmnist",))
    p.add_argument("--size", type=int, default=28, choices=(28, 64, 128, 224))
    p.add_argument("--root", default="data", help="folder to save into")
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    p.set_defaults(func=cmd_download)
