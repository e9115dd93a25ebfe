"""Play the radiologist against a running ``cxr serve RUN --feedback DB --keep-images DIR``, on phantoms.

The feedback loop needs verdicts; on a laptop there is no reader, so this script is one that is
always right: it writes N new phantoms, sends two thirds to the service as a reader would (upload,
then "agree"/"disagree" with the flag and present/absent for every finding, from the phantom's
truth) and keeps the last third as a held-out labelled table for ``cxr validate``.

    cxr serve cxr-out/demo/runs/phantom-cnn --feedback site.sqlite --keep-images site-images &
    python examples/simulated_reader.py http://127.0.0.1:8000 --n 150 --out site
    cxr feedback site.sqlite --export site/labels.csv --report site/feedback.html
    cxr train --init-from cxr-out/demo/runs/phantom-cnn --data site/labels.csv train.epochs=3 \\
        --name site-tuned
    cxr validate runs/site-tuned site/holdout.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from cxrkit.data.synthetic import PhantomDataset
from cxrkit.labels import LABELS, NO_FINDING


def verdict(flag: str, truth: np.ndarray, labels: list[str]) -> tuple[str | None, dict[str, str]]:
    """An always-right reader's answer to a flag, from one study's true labels (1/0 per LABELS)."""
    abnormal = truth[LABELS.index(NO_FINDING)] == 0
    said = "abnormal" if abnormal else "normal"
    triage = ("agree" if flag == said else "disagree") if flag in ("normal", "abnormal") else None
    findings = {
        lab: "present" if truth[LABELS.index(lab)] == 1 else "absent" for lab in labels if lab != NO_FINDING
    }
    return triage, findings


def simulate(url: str, out: Path, n: int = 150, seed: int = 2024, api_key: str | None = None) -> dict:
    """Upload 2/3 of ``n`` new phantoms with verdicts; write the rest as ``out/holdout.csv``."""
    ds = PhantomDataset(n, 64, seed=seed)
    truth = ds.targets()
    (out / "images").mkdir(parents=True, exist_ok=True)
    headers = {"X-API-Key": api_key} if api_key else {}
    read = n * 2 // 3
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        labels = client.get("/v1/model").raise_for_status().json()["labels"]
        for k in range(read):
            path = out / "images" / f"read-{k:04d}.png"
            Image.fromarray(ds.load_image(k)).save(path)
            answer = (
                client.post("/v1/predict", files={"file": (path.name, path.read_bytes(), "image/png")})
                .raise_for_status()
                .json()
            )
            triage, findings = verdict(answer["triage"]["flag"], truth[k], labels)
            body = {"study": answer["study"], "triage": triage, "findings": findings}
            client.post("/v1/feedback", json=body).raise_for_status()
    rows = []
    for k in range(read, n):
        path = out / "images" / f"holdout-{k:04d}.png"
        Image.fromarray(ds.load_image(k)).save(path)
        rows.append(",".join([f"images/{path.name}", *(str(int(v)) for v in truth[k])]))
    (out / "holdout.csv").write_text(",".join(["path", *LABELS]) + "\n" + "\n".join(rows) + "\n")
    return {"read": read, "holdout": n - read}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="the service, e.g. http://127.0.0.1:8000")
    p.add_argument("--n", type=int, default=150, help="phantoms: 2/3 read with verdicts, 1/3 held out")
    p.add_argument("--out", type=Path, default=Path("site"), help="folder for the images and holdout.csv")
    p.add_argument("--seed", type=int, default=2024, help="phantom seed (not the demo's: new studies)")
    p.add_argument("--api-key", help="the service's API key, when it has one")
    args = p.parse_args()
    done = simulate(args.url, args.out, args.n, args.seed, args.api_key)
    print(
        f"{done['read']} studies read with verdicts; {done['holdout']} held out in {args.out / 'holdout.csv'}"
    )


if __name__ == "__main__":
    main()
