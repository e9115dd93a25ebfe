"""``cxr feedback DB``: the readers' feedback store as a labels table (to fine-tune) and a report."""

from __future__ import annotations

import argparse

from cxrkit.cli.options import add_command, given


def cmd_feedback(args: argparse.Namespace) -> int:
    """Export the readers' verdicts in DB (cxr serve --feedback DB) as a labels CSV that cxr train reads
    (data.source=table), and/or write a report of how far readers agree with the model.

    Fine-tune on the export with: cxr train --init-from RUN data.source=table data.path=labels.csv
    """
    from cxrkit.workflows.feedback import FeedbackStore

    if not (args.export or args.report):
        raise ValueError("cxr feedback needs --export CSV, --report HTML or both")
    if args.holdout and not args.export:
        raise ValueError("--holdout splits the export: give --export CSV too")
    store = FeedbackStore(args.db, create=False)
    if args.export:
        from cxrkit.workflows.feedback_export import export_labels

        for line in export_labels(store, args.export, holdout=args.holdout).lines():
            print(line)
    if args.report:
        from cxrkit.workflows.feedback_report import write_feedback_report

        f = write_feedback_report(store, args.report, **given(args, n_boot="bootstrap"))
        named = f"{f['readers']:,} named reader{'s' if f['readers'] != 1 else ''}"
        readers = (
            (f"{named} and unnamed feedback" if f["readers"] else "unnamed readers")
            if f["unnamed"]
            else named
        )
        print(
            f"wrote {args.report}: {f['latest_rows']:,} verdicts on {f['studies']:,} studies from {readers}"
        )
        if len(f["models"]) > 1:
            print(f"warning: the feedback spans {len(f['models'])} model digests (see the report)")
    return 0


def add_feedback_commands(sub) -> None:
    """Register feedback on the ``cxr`` subparsers."""
    p = add_command(
        sub, "feedback", cmd_feedback, "readers' feedback: labels for fine-tuning, agreement report"
    )
    p.add_argument("db", metavar="DB", help="the feedback database (cxr serve RUN --feedback DB)")
    p.add_argument("--export", metavar="CSV", help="write the readers' labels as a table cxr train reads")
    p.add_argument("--report", metavar="HTML", help="write the agreement report (feedback.html)")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="with --export: hold out this share of patients in CSV-holdout.csv, to validate on (e.g. 0.3)",
    )
    p.add_argument(
        "--bootstrap", type=int, help="study-bootstrap replicates of the kappa intervals (default: 1000)"
    )
