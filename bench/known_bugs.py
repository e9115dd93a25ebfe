"""Re-introduce, one at a time, the bugs that once passed the whole suite, and name the tests that fail.

Each bug is a text patch of one module, imported in place of the file by a forked child (the source
on disk never changes; the mechanism is ``bench/mutation.py``'s). A bug that no test notices is
printed as MISSED and the script exits 1.

    python bench/known_bugs.py        # about 2 minutes on 2 cores (two tests train a phantom model)
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation import REPO, SRC, _MutatedModule

# (what the bug is, module under src/cxrkit, text, replacement, tests to run)
BUGS = [
    (
        "evaluation bootstraps images, not patients",
        "workflows/evaluate.py",
        'groups = ev.meta["patient_id"].astype(str).to_numpy()',
        "groups = np.arange(len(ev.meta))",
        ("tests/workflows/test_evaluate.py",),
    ),
    (
        "subgroup metrics on the whole set, not the slice",
        "evaluate/fairness.py",
        'row["macro_auc"] = macro_auc(y_true[m], probs[m])',
        'row["macro_auc"] = macro_auc(y_true, probs)',
        ("tests/evaluate/test_fairness.py",),
    ),
    (
        "subgroup triage rates on the whole set",
        "evaluate/fairness.py",
        "t = triage_counts(abnormal[m], abnormal_score[m], triage_threshold)",
        "t = triage_counts(abnormal, abnormal_score, triage_threshold)",
        ("tests/evaluate/test_fairness.py",),
    ),
    (
        "per-label subgroup AUC columns reversed",
        "evaluate/fairness.py",
        "dict(zip(labels, aucs, strict=True))",
        "dict(zip(list(labels)[::-1], aucs, strict=True))",
        ("tests/evaluate/test_fairness.py",),
    ),
    (
        "weighted BCE counts positives and negatives over all labels pooled",
        "training/losses.py",
        "pos = (y0 * known).sum(0)\n    neg = ((1 - y0) * known).sum(0)",
        "pos = (y0 * known).sum()\n    neg = ((1 - y0) * known).sum()",
        ("tests/training/test_losses.py",),
    ),
    (
        "weighted BCE counts unknown (NaN) labels as negatives",
        "training/losses.py",
        "neg = ((1 - y0) * known).sum(0)",
        "neg = (1 - y0).sum(0)",
        ("tests/training/test_losses.py",),
    ),
    (
        "Grad-CAM normalisation returns all-zero maps",
        "explain/gradcam.py",
        "return torch.where(peak > 1e-12, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))",
        "return torch.zeros_like(cam)",
        ("tests/explain/test_gradcam.py",),
    ),
    (
        "cache key ignores a file's modification time",
        "data/base.py",
        "|{st.st_mtime_ns if st else -1}",
        "",
        ("tests/data/test_cache.py",),
    ),
]


def run_bug(target: str, source: str, tests: tuple[str, ...], log: Path) -> tuple[int, list[str]]:
    """pytest's exit code and the failing test ids, with ``source`` standing in for ``target``."""
    pid = os.fork()
    if pid == 0:
        try:
            import pytest

            os.chdir(REPO)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            name = "cxrkit." + target.removesuffix(".py").replace("/", ".")
            sys.meta_path.insert(0, _MutatedModule(name, SRC / "cxrkit" / target, source))
            os._exit(int(pytest.main(["-q", "-rf", "-p", "no:cacheprovider", *tests])))
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    failed = re.findall(r"^FAILED (\S+)", log.read_text(), re.M)
    return os.waitstatus_to_exitcode(status), failed


def main() -> int:
    """Apply each bug, run its tests, print the tests that caught it."""
    import numpy  # noqa: F401
    import torch  # noqa: F401

    missed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, (what, target, old, new, tests) in enumerate(BUGS):
            text = (SRC / "cxrkit" / target).read_text()
            if text.count(old) != 1:
                print(f"{what}: the code to break is no longer in {target}; update this script")
                missed += 1
                continue
            code, failed = run_bug(target, text.replace(old, new), tests, Path(tmp) / f"{k}.log")
            if code == 0:
                missed += 1
                print(f"MISSED  {what} ({target}): {' '.join(tests)} still pass")
            else:
                print(f"caught  {what} ({target}) by:")
                for f in (failed or [f"pytest exit code {code}"])[:4]:
                    print(f"          {f}")
                if len(failed) > 4:
                    print(f"          and {len(failed) - 4} more")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
