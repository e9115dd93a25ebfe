"""Safe writes: temp file then rename, never through a symlink, formula-free CSV, unique output names."""

from __future__ import annotations

import csv
import os

import pandas as pd
import pytest

from cxrkit.outputs import csv_cell, make_out_dir, unique_stems, write_csv, write_text, write_with


def test_write_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out" / "report.txt"
    link.parent.mkdir()
    link.symlink_to(victim)
    write_text(link, "new")
    assert victim.read_text() == "precious", "the write followed a symlink out of the output folder"
    assert not link.is_symlink() and link.read_text() == "new"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old")

    def boom(fh) -> None:
        fh.write(b"half a ")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(path, boom)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["table.csv"]


def test_a_planted_temp_name_is_never_reused(tmp_path, monkeypatch):
    """The temp file is created exclusively: a file planted under its name makes the write fail."""
    import secrets

    monkeypatch.setattr(secrets, "token_hex", lambda n: "feed")
    planted = tmp_path / ".x.txt.feed.tmp"
    planted.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        write_text(tmp_path / "x.txt", "data")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-2+3", "@SUM(A1)", "=cmd|' /C calc'!A0"])
def test_formula_like_cells_are_escaped(tmp_path, cell):
    path = write_csv(
        tmp_path / "t.csv", pd.DataFrame({"file": [cell, "plain.png"], "p": [0.5, -0.25]}), index=False
    )
    rows = list(csv.DictReader(path.open()))
    assert rows[0]["file"] == "'" + cell and rows[1]["file"] == "plain.png"
    assert rows[1]["p"] == "-0.25", "numbers must stay numbers"
    assert csv_cell(3) == 3 and csv_cell("a=b") == "a=b"


def test_unique_stems_keep_plain_names_and_separate_collisions():
    stems = unique_stems(["/a/x.png", "/b/x.png", "/c/ä.png", "/c/ö.png", "/d/plain.png"])
    assert stems[4] == "plain" and len(set(stems)) == 5
    assert all(s.isascii() for s in stems)
    assert unique_stems(["/a/x.png", "/b/x.png"]) == stems[:2], "names must be stable between runs"


def test_make_out_dir_names_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match=f"{tmp_path / 'f'}: exists and is a file"):
        make_out_dir(tmp_path / "f" / "sub")
    assert make_out_dir(tmp_path / "new" / "sub").is_dir()


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "worklist.csv"
    path.write_text("old")
    path.chmod(0o600)
    write_text(path, "new")
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_a_device_or_fifo_is_never_replaced(tmp_path):
    """`--out /dev/null` (or a FIFO) must not turn the node into a regular file."""
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is a device, FIFO or socket"):
        write_text(fifo, "data")
    import stat

    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_printable_escapes_newlines_and_terminal_codes():
    from cxrkit.outputs import printable

    assert printable("plain ü.png") == "plain ü.png"
    assert printable("bad\nFAKE.png") == "bad\\nFAKE.png" and "\x1b" not in printable("x\x1b[2K.png")
