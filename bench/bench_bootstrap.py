"""Patient-bootstrap CIs for 15 labels: cxrkit's weighted, sort-once bootstrap against the usual loop.

The peer is what people write by hand: for each replicate, draw patients, gather their images and
call scikit-learn's roc_auc_score / average_precision_score per label. Both run here, in the same
process, on synthetic scores shaped like the NIH test split (25,596 images, 15 labels, ~2.3 images
per patient by default). Prints seconds per 100 replicates and the ratio.

    python bench/bench_bootstrap.py [--images 25596] [--replicates 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=25_596)
    ap.add_argument("--patients", type=int, default=11_000)
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--peer-replicates", type=int, default=20, help="replicates for the (slow) peer")
    args = ap.parse_args()
    from sklearn.metrics import average_precision_score, roc_auc_score

    from cxrkit.evaluate.bootstrap import ranking_cis

    rng = np.random.default_rng(0)
    n, n_labels = args.images, 15
    prev = np.r_[np.linspace(0.002, 0.2, 14), 0.5]
    y = (rng.random((n, n_labels)) < prev).astype(float)
    s = rng.random((n, n_labels)) * 0.7 + 0.3 * y
    groups = np.sort(rng.integers(0, args.patients, n))

    t0 = time.perf_counter()
    ranking_cis(y, s, groups, n_boot=args.replicates, seed=0)
    ours = (time.perf_counter() - t0) / args.replicates * 100

    codes = np.unique(groups, return_inverse=True)[1]
    members = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)]
    t0 = time.perf_counter()
    for _ in range(args.peer_replicates):
        pick = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[k] for k in pick])
        yb, sb = y[idx], s[idx]
        for j in range(n_labels):
            if 0 < yb[:, j].sum() < len(idx):
                roc_auc_score(yb[:, j], sb[:, j])
                average_precision_score(yb[:, j], sb[:, j])
        roc_auc_score(yb.ravel(), sb.ravel())
        average_precision_score(yb.ravel(), sb.ravel())
    peer = (time.perf_counter() - t0) / args.peer_replicates * 100
    print(f"{n:,} images x {n_labels} labels, {len(members):,} patients; per-label + micro AUC and AP")
    print(f"cxrkit ranking_cis      {ours:7.2f} s per 100 replicates")
    print(f"sklearn loop (peer)     {peer:7.2f} s per 100 replicates")
    print(f"speed-up                {peer / ours:7.1f}x")


if __name__ == "__main__":
    main()
