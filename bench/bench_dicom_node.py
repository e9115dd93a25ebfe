"""Throughput and latency of ``cxr dicom-node`` against a real Orthanc, with ``cxr predict`` as the peer.

N phantom radiographs are written as DX DICOM (``--side`` px), pushed into the node with dcmtk's
storescu; the node scores them, builds an SR (TID 1500) and a Secondary Capture with Grad-CAM for each
and C-STOREs both to Orthanc. Throughput: N / (time from the first C-STORE until Orthanc holds all N
SRs). Reference, same run, same files, in process: ``predict_files`` (what ``cxr predict`` runs), without
and with heatmaps. Latency: one study at a time, from storescu's start until its SR is in Orthanc.

    python bench/bench_dicom_node.py            # about 3 minutes on 2 cores (trains the demo run once)

Needs Debian's orthanc and dcmtk (.ci/run installs them) and the node's extra.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "dicom")]


def demo_run(out: Path) -> Path:
    """The run of ``cxr demo`` (trained once into ``out``)."""
    run = out / "demo" / "runs" / "phantom-cnn"
    if not (run / "model.json").exists():
        subprocess.run([sys.executable, "-m", "cxrkit.cli", "demo", "--out", str(out / "demo")], check=True)
    return run


def roofline(run, files: list[Path]) -> dict[str, float]:
    """Mean seconds per study of each step the node adds to scoring: the TID 1500 SR (highdicom build,
    then encode) and the Secondary Capture (Grad-CAM overlay, build, encode)."""
    import io

    import pydicom

    from cxrkit.dicom.results import Algorithm, InstanceResult, build_sc, build_sr
    from cxrkit.workflows.explain import overlay_of
    from cxrkit.workflows.predict import predict_files

    table = predict_files(run, files, progress=False, log=lambda m: None)
    algo = Algorithm(run.package.model_name, "bench", "0" * 16)
    spent = dict.fromkeys(("SR build", "SR encode", "Grad-CAM overlay", "SC build", "SC encode"), 0.0)
    from cxrkit.data.decode import read_image
    from cxrkit.data.transforms import prepare_image

    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        probs = table[list(run.labels)].to_numpy()[k]
        result = InstanceResult(
            labels=list(run.labels),
            probs=probs,
            thresholds=np.full(len(probs), 0.5),
            threshold_rule="max_f1",
            flag="abnormal",
            score=0.5,
            threshold=0.5,
            target_sensitivity=0.95,
        )
        steps = []
        t = time.perf_counter()
        sr = build_sr(ds, result, algo)
        steps.append(time.perf_counter() - t)
        t = time.perf_counter()
        sr.save_as(io.BytesIO())
        steps.append(time.perf_counter() - t)
        image = read_image(f)
        t = time.perf_counter()
        rgb = np.asarray(overlay_of(run, image, prepare_image(image, run.spec), run.labels[0], "bench"))
        steps.append(time.perf_counter() - t)
        t = time.perf_counter()
        sc = build_sc(ds, rgb)
        steps.append(time.perf_counter() - t)
        t = time.perf_counter()
        sc.save_as(io.BytesIO())
        steps.append(time.perf_counter() - t)
        for key, dt in zip(spent, steps, strict=True):
            spent[key] += dt / len(files)
    return spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="run folder (default: the demo run, trained if missing)")
    p.add_argument("--n", type=int, default=100, help="studies pushed for throughput")
    p.add_argument("--side", type=int, default=512, help="side of the DICOM images (px)")
    p.add_argument("--latency", type=int, default=20, help="single studies timed one at a time")
    p.add_argument("--out", type=Path, default=ROOT / "bench-out" / "dicom-node")
    args = p.parse_args()
    from pacs import NodeProcess, Orthanc, free_port, storescu, wait_for, write_study_image
    from PIL import Image

    from cxrkit.data.synthetic import PhantomDataset
    from cxrkit.run.model import RunModel
    from cxrkit.workflows.predict import predict_files

    run_dir = args.run or demo_run(args.out)
    work = args.out / f"session-{int(time.time())}"
    phantoms = PhantomDataset(args.n + args.latency, 64, seed=4242)
    (work / "in").mkdir(parents=True)
    files = []
    for k in range(args.n + args.latency):
        img = np.asarray(
            Image.fromarray(phantoms.load_image(k)).resize((args.side, args.side), Image.BILINEAR)
        )
        files.append(write_study_image(work / "in" / f"s{k:04d}.dcm", img))
    bulk, single = files[: args.n], files[args.n :]

    run = RunModel.load(run_dir, "cpu")
    predict_files(run, bulk[:8], progress=False, log=lambda m: None)  # warm-up
    t = time.perf_counter()
    predict_files(run, bulk, progress=False, log=lambda m: None)
    ref = args.n / (time.perf_counter() - t)
    t = time.perf_counter()
    predict_files(run, bulk, heatmaps=work / "heat", progress=False, log=lambda m: None)
    ref_heat = args.n / (time.perf_counter() - t)

    per_study = roofline(run, bulk[:10])
    port = free_port()
    pacs = Orthanc(work / "orthanc", port).start()
    t = time.perf_counter()  # the PACS alone: the same files straight into Orthanc, no node
    storescu(pacs.dicom, *bulk)
    wait_for(lambda: len(pacs.find(Modality="DX")) >= args.n, 600, "all DX in Orthanc", step=0.1)
    pacs_rate = args.n / (time.perf_counter() - t)
    node = NodeProcess(run_dir, work / "node", port, "--return-to", pacs.peer).start()
    try:
        t = time.perf_counter()
        storescu(port, *bulk)
        wait_for(lambda: len(pacs.find(Modality="SR")) >= args.n, 1200, "all SRs", step=0.1)
        node_rate = args.n / (time.perf_counter() - t)
        lat = []
        for f in single:
            before = len(pacs.find(Modality="SR"))
            t = time.perf_counter()
            storescu(port, f)
            wait_for(lambda b=before: len(pacs.find(Modality="SR")) > b, 120, "one SR", step=0.02)
            lat.append(time.perf_counter() - t)
    finally:
        node.stop()
        pacs.stop()
    import torch

    print(f"# bench_dicom_node: {args.n} DX studies, {args.side} px, model {run.package.model_name}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    print("| path | studies/min | ratio to cxr predict |")
    print("|---|---:|---:|")
    print(f"| cxr predict (in process, no heatmaps) | {ref * 60:.0f} | 1.00 |")
    print(f"| cxr predict --heatmaps (in process) | {ref_heat * 60:.0f} | {ref_heat / ref:.2f} |")
    print(f"| dicom-node: storescu -> SR + SC in Orthanc | {node_rate * 60:.0f} | {node_rate / ref:.2f} |")
    print(
        f"| storescu -> Orthanc alone (no node, no results) | {pacs_rate * 60:.0f} | {pacs_rate / ref:.2f} |"
    )
    print(f"node vs cxr predict --heatmaps (same work: scores + Grad-CAM): {node_rate / ref_heat:.2f}")
    print("where a study's time goes in the node (ms, in process, 10 studies):")
    print("  " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in per_study.items()))
    print(
        f"single study, C-STORE to SR-in-PACS over {len(lat)} studies: p50 {np.percentile(lat, 50):.2f} s, "
        f"p95 {np.percentile(lat, 95):.2f} s"
    )


if __name__ == "__main__":
    main()
