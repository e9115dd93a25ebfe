"""The EDA report: one self-contained HTML page of label, demographic and image statistics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit import eda
from cxrkit.data.base import XRayDataset
from cxrkit.outputs import make_out_dir, write_text
from cxrkit.report.html import Section, fig_tag, figure, kpis, render_page, table_html

SIZE_SAMPLE = 32  # images decoded to tabulate sizes (enough to see mixed resolutions, quick on big sets)


def _bar_counts(counts: pd.DataFrame):
    fig = figure(7, 0.6 + 0.28 * len(counts))
    ax = fig.add_subplot()
    c = counts.iloc[::-1]
    ax.barh(c["label"], c["count"], color="#3b75af")
    for y, (n, s) in enumerate(zip(c["count"], c["share"], strict=False)):
        ax.text(n, y, f" {n:,} ({s:.1%})", va="center", fontsize=8)
    ax.set_xlabel("images")
    ax.set_xlim(0, c["count"].max() * 1.25 + 1)
    return fig


def _heatmap(df: pd.DataFrame, title: str, fmt: str, cmap: str, vmin=None, vmax=None):
    """Annotated heatmap; the diagonal is left uncoloured so off-diagonal pairs stay readable."""
    n = len(df)
    fig = figure(1.2 + 0.5 * n, 1.0 + 0.45 * n)
    ax = fig.add_subplot()
    colour = df.to_numpy(dtype=float).copy()
    np.fill_diagonal(colour, np.nan)
    im = ax.imshow(colour, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n), df.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), df.index, fontsize=8)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                v = df.iat[i, j]
                if v == v:
                    ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.7)
    ax.set_title(title, fontsize=10)
    return fig


def _stacked_shares(table: pd.DataFrame, title: str):
    shares = table.div(table.sum(axis=1).replace(0, np.nan), axis=0).fillna(0)
    fig = figure(7, 0.8 + 0.28 * len(shares))
    ax = fig.add_subplot()
    left = np.zeros(len(shares))
    for col in shares.columns:
        ax.barh(shares.index[::-1], shares[col].to_numpy()[::-1], left=left[::-1], label=str(col))
        left += shares[col].to_numpy()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of images with the label")
    ax.legend(loc="lower right", fontsize=8, ncols=min(4, len(shares.columns)))
    ax.set_title(title, fontsize=10)
    return fig


def _age_figs(meta: pd.DataFrame, labels: Sequence[str]):
    age = meta["age"].astype(float)
    fig = figure(7, 3)
    ax = fig.add_subplot()
    ax.hist(age.dropna(), bins=np.arange(0, 101, 5), color="#3b75af")
    ax.set_xlabel("age (years)")
    ax.set_ylabel("images")
    y = meta[list(labels)].to_numpy(dtype=np.float32) > 0.5
    data = [age[y[:, j]].dropna().to_numpy() for j in range(len(labels))]
    keep = [j for j, d in enumerate(data) if len(d)]
    fig2 = figure(7, 0.8 + 0.3 * len(keep))
    ax2 = fig2.add_subplot()
    ax2.boxplot(
        [data[j] for j in keep],
        orientation="horizontal",
        tick_labels=[labels[j] for j in keep],
        showfliers=False,
    )
    ax2.set_xlabel("age (years)")
    return fig, fig2


def _image_grid(ds: XRayDataset, labels: Sequence[str], per_label: int, seed: int):
    rng = np.random.default_rng(seed)
    y = ds.targets() > 0.5
    rows = [(lab, np.flatnonzero(y[:, j])) for j, lab in enumerate(labels) if y[:, j].any()]
    if not rows:
        return None
    width, height = 1.3 * per_label + 1.4, 1.3 * len(rows)
    fig = figure(width, height, layout=None)  # fixed margins: constrained layout of 90 panels took ~2 s
    grid = fig.add_gridspec(
        len(rows),
        per_label,
        left=1.4 / width,
        right=0.99,
        bottom=0.05 / height,
        top=1 - 0.05 / height,
        wspace=0.05,
        hspace=0.05,
    )
    for r, (lab, idx) in enumerate(rows):
        pick = rng.choice(idx, size=min(per_label, len(idx)), replace=False)
        for c in range(per_label):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(pick):
                try:
                    ax.imshow(ds.load_image(int(pick[c])), cmap="gray", vmin=0, vmax=255)
                except (OSError, ValueError):
                    ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(lab, fontsize=8, rotation=0, ha="right", va="center")
    return fig


def _sample_grid(ds: XRayDataset, n: int, seed: int):
    """A grid of ``n`` random images with their names: the image section of an unlabelled set."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(ds), size=min(n, len(ds)), replace=False))
    cols = min(6, len(pick))
    rows = -(-len(pick) // cols)
    fig = figure(1.6 * cols, 1.8 * rows)
    for k, i in enumerate(pick):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(Path(str(ds.meta["image_id"].iat[int(i)])).name[:24], fontsize=7)
        try:
            ax.imshow(ds.load_image(int(i)), cmap="gray", vmin=0, vmax=255)
        except (OSError, ValueError):
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
    return fig


def _sizes_section(ds: XRayDataset, seed: int) -> Section:
    """Image sizes of a random sample (decoded), and how many of the sample could not be read."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(ds), size=min(SIZE_SAMPLE, len(ds)), replace=False))
    sizes, unreadable = [], 0
    for i in pick:
        try:
            img = ds.load_image(int(i))
            sizes.append((int(img.shape[1]), int(img.shape[0])))
        except (OSError, ValueError):
            unreadable += 1
    what = "all images" if len(pick) == len(ds) else f"a random sample of {len(pick)} images"
    note = f'<p class="note">Decoded sizes (width x height, pixels) of {what}'
    note += f"; {unreadable} could not be read.</p>" if unreadable else ".</p>"
    return Section("Image sizes", note + table_html(eda.size_table(sizes), index=False))


def _label_sections(meta: pd.DataFrame, labels: list[str]) -> list[Section]:
    """Label counts, multi-label share and co-occurrence; a note when the source has no labels."""
    if not labels:
        return [
            Section(
                "Labels",
                '<p class="note">This source has no labels (plain image files without metadata): '
                "label counts, co-occurrence and per-label plots are left out.</p>",
            )
        ]
    counts = eda.label_counts(meta, labels)
    findings = eda.findings_of(labels)
    sections = [
        Section(
            "Label counts and shares",
            fig_tag(_bar_counts(counts), "label counts") + table_html(counts, index=False),
        )
    ]
    if len(findings) > 1:
        per_img = eda.findings_per_image(meta, labels)
        fig = figure(6, 2.8)
        ax = fig.add_subplot()
        ax.bar(np.arange(len(per_img)), per_img.to_numpy(), color="#3b75af")
        ax.set_xticks(np.arange(len(per_img)), [str(k) for k in per_img.index])
        ax.set_xlabel("findings per image")
        ax.set_ylabel("images")
        ml = pd.DataFrame([eda.multilabel_share(meta, labels)])
        sections.append(
            Section(
                "Multi-label share",
                fig_tag(fig, "findings per image")
                + table_html(ml, index=False)
                + table_html(per_img.to_frame().T),
            )
        )
        co = eda.cooccurrence(meta, findings)
        sections.append(
            Section(
                "Co-occurrence and correlation",
                fig_tag(_heatmap(co, "images with both findings", ".0f", "Blues"), "co-occurrence")
                + fig_tag(
                    _heatmap(
                        eda.label_correlation(meta, labels), "label correlation (phi)", ".2f", "RdBu_r", -1, 1
                    ),
                    "label correlation",
                ),
            )
        )
    return sections


def _demographic_sections(meta: pd.DataFrame, labels: list[str]) -> list[Section]:
    """Age, sex and view position, by label where there are labels; a note for what the source lacks."""
    sections = []
    if eda.has_column(meta, "age") and labels:
        f1, f2 = _age_figs(meta, labels)
        sections.append(
            Section(
                "Age, overall and by label",
                fig_tag(f1, "age histogram")
                + fig_tag(f2, "age by label")
                + table_html(eda.age_by_label(meta, labels), "{:.1f}"),
            )
        )
    elif eda.has_column(meta, "age"):
        sections.append(Section("Age", table_html(eda.age_by_label(meta, labels), "{:.1f}")))
    else:
        sections.append(Section("Age", '<p class="note">This source has no age metadata.</p>'))
    for col, name in (("sex", "Sex"), ("view", "View position")):
        if eda.has_column(meta, col):
            t = eda.by_label(meta, labels, col)
            sections.append(
                Section(
                    f"{name} by label",
                    fig_tag(_stacked_shares(t, f"{name.lower()} by label"), f"{col} by label")
                    + table_html(t),
                )
            )
        else:
            sections.append(Section(name, f'<p class="note">This source has no {col} metadata.</p>'))
    return sections


def _image_sections(ds: XRayDataset, labels: list[str], per_label: int, seed: int) -> list[Section]:
    """Image sizes and sample images (per label, or a plain sample of an unlabelled set)."""
    if not (ds.has_images and len(ds)):
        return [
            Section(
                "Sample images",
                '<p class="note">Metadata only: no images to show. '
                "Pass an image folder to add a sample grid.</p>",
            )
        ]
    sections = [_sizes_section(ds, seed)]
    if not labels:
        grid = _sample_grid(ds, max(per_label, 1) * 2, seed)
        sections.append(Section("Sample images", fig_tag(grid, "sample images")))
        return sections
    grid = _image_grid(ds, labels, per_label, seed)
    if grid is not None:
        sections.append(Section("Sample images per label", fig_tag(grid, "sample images per label")))
    return sections


def build_eda_report(
    ds: XRayDataset, out: str | Path, *, title: str | None = None, per_label: int = 6, seed: int = 0
) -> tuple[Path, dict]:
    """Write ``out`` (HTML) and ``out`` with .json (numbers); return the path and the summary.

    A source without labels (plain image files) gets a label-free page: counts, image sizes, samples.
    """
    meta, labels = ds.meta, list(ds.labels)
    summary = eda.summarize(meta, labels)
    share = summary["multi_label_share_of_abnormal"]
    overview = Section(
        "Overview",
        kpis(
            [
                ("images", f"{summary['images']:,}"),
                ("patients", f"{summary['patients']:,}"),
                ("labels", str(len(labels))),
                ("with any finding", f"{summary['abnormal']:,}" if labels else "n/a"),
                ("multi-label share of abnormal", f"{share:.1%}" if share == share else "n/a"),
            ]
        )
        + f'<p class="note">{ds.summary()}; task: {ds.task}.</p>',
    )
    sections = [
        overview,
        *_label_sections(meta, labels),
        *_demographic_sections(meta, labels),
        *_image_sections(ds, labels, per_label, seed),
    ]
    page = render_page(title or f"cxrkit EDA — {ds.source}", sections, subtitle=ds.summary())
    out = Path(out)
    make_out_dir(out.parent)
    write_text(out, page)
    write_text(out.with_suffix(".json"), json.dumps(_plain(summary), indent=1, allow_nan=False))
    return out, summary


def _plain(value):
    """A JSON-ready copy: numpy numbers as Python ones, NaN as null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return None if value != value else float(value)
    return value
