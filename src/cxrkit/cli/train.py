"""``cxr train``, ``experiments``, ``models``, ``package`` and ``demo``: parse, build the config, call."""

from __future__ import annotations

import argparse

from cxrkit.cli.options import add_command, add_device_argument, given
from cxrkit.config import load_yaml


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model: YAML config, then SECTION.KEY=VALUE overrides; or continue a run with --resume.

    --init-from RUN fine-tunes: the new run starts from RUN's best weights and keeps RUN's network,
    labels (in RUN's order) and input spec; data, partition and training come from the config.
    """
    from cxrkit.config import build_run_config, parse_overrides
    from cxrkit.training.loop import fit

    over = parse_overrides(args.overrides)
    for key in ("out", "name"):
        if getattr(args, key):
            over[key] = getattr(args, key)
    if args.data:  # a labels CSV (cxr feedback --export) is a table; anything else a class-folder tree
        over.setdefault("data.path", args.data)
        over.setdefault("data.source", "table" if args.data.lower().endswith(".csv") else "folder")
    if args.resume and args.init_from:
        raise ValueError("--resume continues a run; --init-from starts a new one: give one of them")
    if args.resume:
        run = fit(resume=args.resume, overrides=over)
    elif args.init_from:
        from cxrkit.training.finetune import finetune_config, load_parent

        parent = load_parent(args.init_from)
        doc = load_yaml(args.config) if args.config else {}
        run = fit(finetune_config(parent, doc, over, source=args.config), init_from=parent)
    else:
        doc = load_yaml(args.config) if args.config else {}
        run = fit(build_run_config(doc, over, source=args.config))
    print(f"run folder: {run}")
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    """Run every config of a grid and write one comparison table (CSV, Markdown, HTML)."""
    from cxrkit.config import parse_overrides
    from cxrkit.workflows.experiments import run_grid

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
        "timm:<name>              timm         ImageNet  any timm model, e.g. timm:vit_small_patch16_224, "
        "timm:swin_tiny_patch4_window7_224, timm:convnext_tiny"
    )
    from cxrkit.models.xrv import xrv_weight_names

    for weights in xrv_weight_names():
        print(f"{'xrv:' + weights:32s} torchxrayvision  chest X-ray  torchxrayvision's published network")
    print(
        "rad-dino                         transformers     chest X-ray  Rad-DINO ViT-B/14 "
        "(pip install transformers)"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded default, offline: phantoms, EDA, split, cache, train, evaluate (configs/demo.yaml)."""
    from cxrkit.workflows.demo import demo_config, run_demo

    over = {
        "data.n": args.n,
        "data.size": args.image_size,
        "prepare.size": args.image_size,
        "data.seed": args.seed,
        "partition.seed": args.seed,
        "train.seed": args.seed,
        "train.epochs": args.epochs,
    }
    cfg = demo_config(args.out, {k: v for k, v in over.items() if v is not None})
    run_demo(cfg, args.out, **given(args, n_boot="bootstrap"))
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    """(Re)compute a run's model.json (calibration, thresholds, triage point) from its validation split."""
    from cxrkit.config import parse_overrides
    from cxrkit.workflows.package import package_run

    package_run(args.run, parse_overrides(args.overrides), **given(args, device="device"))
    return 0


def add_train_commands(sub) -> None:
    """Register demo, train, experiments, package and models on the ``cxr`` subparsers."""
    p = add_command(sub, "demo", cmd_demo, "run the embedded default end to end (phantoms, offline)")
    p.add_argument("--out", default="cxr-out/demo", help="output folder")
    p.add_argument("--n", type=int, help="number of phantom images (recipe: 2000)")
    p.add_argument("--image-size", type=int, help="phantom image size (recipe: 64)")
    p.add_argument("--epochs", type=int, help="training epochs (recipe: 8)")
    p.add_argument("--seed", type=int, help="seed of the data, split and training (recipe: 0)")
    p.add_argument("--bootstrap", type=int, help="patient-bootstrap replicates for the CIs (default: 500)")

    p = add_command(sub, "train", cmd_train, "train a model (config YAML + overrides), or resume a run")
    p.add_argument("--config", help="run config YAML (sections data, prepare, partition, model, train)")
    p.add_argument(
        "overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="e.g. train.epochs=5 model.name=resnet18"
    )
    p.add_argument("--resume", help="run folder to continue from its last.pt")
    p.add_argument(
        "--init-from",
        metavar="RUN",
        help="fine-tune: start from RUN's best weights, keeping its network, labels and input spec",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="shorthand for data.path=PATH with data.source=table (a .csv) or folder (anything else)",
    )
    p.add_argument("--out", help="parent folder of run folders (default runs/)")
    p.add_argument("--name", help="run folder name (default: time and model)")

    p = add_command(
        sub, "experiments", cmd_experiments, "run a grid of configs and compare them in one table"
    )
    p.add_argument("grid", help="grid YAML (base config + runs with overrides)")
    p.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="applied to every run")
    p.add_argument("--out", help="output folder (default: the grid's out, else runs/GRID)")

    p = add_command(sub, "package", cmd_package, "(re)write a run's model.json from its validation split")
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument(
        "overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="e.g. triage.target_sensitivity=0.9"
    )
    add_device_argument(p)

    p = add_command(sub, "models", cmd_models, "list registered models")
