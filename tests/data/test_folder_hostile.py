"""One hostile file in a folder is listed and skipped: it never aborts prepare, predict, triage or explain.

And decoding the biggest images we accept, or refusing bombs, stays under 1 GB of resident memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import chest_like, png_bytes
from pngs import write_png

from cxrkit.cli import main


def _poison(folder: Path) -> list[str]:
    """Put a declared bomb, a FIFO and a symlink loop among good images; return their names."""
    write_png(folder / "bomb.png", 30_000, 30_000, pixels=False)
    names = ["bomb.png"]
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.png")
        (folder / "loop.png").symlink_to(folder / "loop.png")
        names += ["pipe.png", "loop.png"]
    return names


def test_prepare_lists_and_skips_hostile_files(tmp_path, capsys):
    root = tmp_path / "set"
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True)
        for k in range(4):
            (root / cls / f"{cls}-{k}.png").write_bytes(png_bytes(chest_like(48, 48, seed=k)))
    bad = _poison(root / "PNEUMONIA")
    out = tmp_path / "cache"
    rc = main(["prepare", str(root), "--source", "folder", "--out", str(out), "--size", "32", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in bad), printed
    failures = pd.read_csv(out / "failures.csv")
    assert sorted(Path(f).name for f in failures["file"]) == sorted(bad)
    assert len(pd.read_csv(out / "meta.csv")) == 8


@pytest.mark.slow
def test_predict_triage_and_explain_go_on_past_hostile_files(phantom_run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(2):
        (folder / f"ok{k}.png").write_bytes(png_bytes(chest_like(64, 64, seed=k)))
    bad = _poison(folder)
    rc = main(["predict", str(phantom_run), str(folder), "--out", str(tmp_path / "p.csv"), "--quiet"])
    table = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert rc == 1 and len(table) == 2 + len(bad)
    assert set(table.loc[table["error"] != "", "image_id"]) == set(bad)
    rc = main(["triage", str(phantom_run), str(folder), "--out", str(tmp_path / "t")])
    wl = pd.read_csv(tmp_path / "t" / "worklist.csv", keep_default_na=False)
    assert rc == 1 and set(wl["image_id"][: len(bad)]) == set(bad) and len(wl) == 2 + len(bad)
    rc = main(["explain", str(phantom_run), str(folder), "--top", "1", "--out", str(tmp_path / "x")])
    assert rc == 1 and len(list((tmp_path / "x").glob("ok*.png"))) >= 2


# VmHWM: this process's own peak resident set. (ru_maxrss is not: Linux carries the parent's peak
# across fork and exec, so a child of a 1 GB pytest would report 1 GB before doing anything.)
PEAK = (
    "import sys\n"
    "from cxrkit.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]\n"
    "print('PEAK_KB', hwm)\n"
)


def _peak_mb(args: list[str]) -> tuple[float, str]:
    proc = subprocess.run([sys.executable, "-c", PEAK, *args], capture_output=True, text=True, timeout=300)
    line = [x for x in proc.stdout.splitlines() if x.startswith("PEAK_KB")]
    assert line, proc.stdout + proc.stderr
    return int(line[0].split()[1]) / 1024, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from Linux's /proc")
def test_bombs_and_huge_16bit_images_stay_under_1GB(phantom_run, tmp_path, record_property):
    """A real 30,000 x 30,000 bomb (0.9 GB of pixels in about 1 MB) and a 7,000 x 7,000 16-bit PNG."""
    bomb = write_png(tmp_path / "bomb.png", 30_000, 30_000)
    big = write_png(tmp_path / "big16.png", 7_000, 7_000, bit_depth=16, ramp=True)  # assessable: scored
    assert bomb.stat().st_size < 5_000_000
    inspect_mb, out = _peak_mb(["inspect", str(bomb), str(big)])
    assert "over the limit" in out and "7000x7000 grey" in out
    predict_mb, out = _peak_mb(
        ["predict", str(phantom_run), str(bomb), str(big), "--out", str(tmp_path / "p.csv")]
    )
    table = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert (table["error"] != "").tolist() == [True, False]
    record_property("peak_rss_mb", {"inspect": inspect_mb, "predict": predict_mb})
    print(f"peak resident memory: cxr inspect {inspect_mb:.0f} MB, cxr predict {predict_mb:.0f} MB")
    assert inspect_mb < 1024 and predict_mb < 1024


def test_an_unreadable_subfolder_is_listed_not_silently_skipped(tmp_path, monkeypatch):
    """os.walk meets a sub-folder it may not read (simulated: tests may run as root): it becomes a row."""
    from cxrkit.data.folder import list_images
    from cxrkit.data.transforms import InputSpec
    from cxrkit.run.inputs import prepare_inputs

    (tmp_path / "ok").mkdir()
    (tmp_path / "locked").mkdir()
    (tmp_path / "ok" / "a.png").write_bytes(png_bytes(chest_like(48, 48)))
    (tmp_path / "locked" / "b.png").write_bytes(png_bytes(chest_like(48, 48)))
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = list_images(tmp_path)
    assert sorted(p.name for p in found) == ["a.png", "locked"]
    rows = prepare_inputs(tmp_path, InputSpec(32, "pad")).rows
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and bad[0]["source"].endswith("locked") and bad[0]["status"] == "unreadable"


def test_folder_scans_find_linked_folders_suffixless_dicoms_and_hidden_files(tmp_path):
    """PACS exports name DICOMs IM0001; inboxes link folders in: none of these studies may vanish."""
    import numpy as np
    from conftest import write_dicom

    from cxrkit.data.folder import list_images

    pacs, other = tmp_path / "pacs", tmp_path / "three"
    pacs.mkdir()
    other.mkdir()
    write_dicom(pacs / "IM0001", chest_like(40, 40).astype(np.uint16))
    (pacs / ".hidden.png").write_bytes(png_bytes(chest_like(40, 40)))
    (pacs / "notes.txt").write_text("not a study")
    (other / "a.png").write_bytes(png_bytes(chest_like(40, 40)))
    (pacs / "today").symlink_to(other)
    (other / "back").symlink_to(pacs)  # a loop: each real folder is walked once
    if hasattr(os, "mkfifo"):
        os.mkfifo(pacs / "fifo")  # no suffix: not sniffed (opening it would block)
    found = sorted(str(p.relative_to(pacs)) for p in list_images(pacs))
    assert found == [".hidden.png", "IM0001", "today/a.png"]
