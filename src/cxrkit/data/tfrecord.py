"""The Kaggle "NIH Chest X-rays TFRecords" shards, read without TensorFlow.

A TFRecord file is a run of ``[u64 length][u32 crc][payload][u32 crc]`` records whose payload is
a ``tf.train.Example`` protobuf. The few lines of wire-format parsing below cover Example's
bytes/float/int64 lists; ``write_tfrecord`` produces the same format (for fixtures and export).
The shards hold a 600x600 JPEG under ``image``, the file name under ``image_id`` and 15 int64
label features spelled as in NIH; patient, age, sex and view are joined from NIH metadata.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.data.base import XRayDataset, file_fingerprint, standard_meta
from cxrkit.data.decode import decode_bytes
from cxrkit.labels import LABELS, TFRECORD_LABEL_FEATURES, align_by_name
from cxrkit.outputs import write_with

Feature = list[bytes] | list[float] | list[int]


class TFRecordError(ValueError):
    """A malformed shard; the message names the file and byte offset."""


def iter_records(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, payload)`` for each record of a TFRecord file."""
    with open(path, "rb") as fh:
        offset = 0
        while header := fh.read(12):
            if len(header) < 12:
                raise TFRecordError(f"{path}: truncated record header at byte {offset}")
            (length,) = struct.unpack("<Q", header[:8])
            payload = fh.read(length)
            if len(payload) < length or len(fh.read(4)) < 4:
                raise TFRecordError(f"{path}: truncated record at byte {offset}")
            yield offset, payload
            offset += 16 + length


def read_record(path: str | Path, offset: int) -> bytes:
    """Payload of the record starting at ``offset``."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        (length,) = struct.unpack("<Q", fh.read(12)[:8])
        return fh.read(length)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """Yield (field number, wire type, value) of one protobuf message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, val


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_feature(buf: bytes) -> Feature:
    for kind, _, body in _fields(buf):
        assert isinstance(body, bytes)
        values: list = []
        for _, wire, v in _fields(body):
            if kind == 1:
                values.append(bytes(v))  # type: ignore[arg-type]
            elif kind == 2:
                values.extend(struct.unpack(f"<{len(v) // 4}f", v) if wire == 2 else struct.unpack("<f", v))  # type: ignore[arg-type]
            elif kind == 3:
                if wire == 2:
                    p = 0
                    while p < len(v):  # type: ignore[arg-type]
                        x, p = _varint(v, p)  # type: ignore[arg-type]
                        values.append(_signed(x))
                else:
                    values.append(_signed(v))  # type: ignore[arg-type]
        return values
    return []


def parse_example(payload: bytes) -> dict[str, Feature]:
    """Decode a serialised ``tf.train.Example`` into ``{name: list of values}``."""
    out: dict[str, Feature] = {}
    for field, _, features in _fields(payload):
        if field != 1:
            continue
        for _, _, entry in _fields(features):  # type: ignore[arg-type]
            key, value = "", b""
            for f, _, v in _fields(entry):  # type: ignore[arg-type]
                if f == 1:
                    key = bytes(v).decode()  # type: ignore[arg-type]
                elif f == 2:
                    value = v  # type: ignore[assignment]
            out[key] = _parse_feature(value)  # type: ignore[arg-type]
    return out


def _enc_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _enc_len(field: int, body: bytes) -> bytes:
    return _enc_varint(field << 3 | 2) + _enc_varint(len(body)) + body


def encode_example(features: Mapping[str, Sequence[bytes] | Sequence[int] | Sequence[float]]) -> bytes:
    """Serialise ``{name: values}`` as a ``tf.train.Example`` (bytes, int64 or float lists)."""
    entries = b""
    for key, values in features.items():
        vals = list(values)
        if vals and isinstance(vals[0], bytes):
            feat = _enc_len(1, b"".join(_enc_len(1, v) for v in vals))
        elif vals and isinstance(vals[0], float):
            feat = _enc_len(2, _enc_len(1, struct.pack(f"<{len(vals)}f", *vals)))
        else:
            feat = _enc_len(3, _enc_len(1, b"".join(_enc_varint(int(v)) for v in vals)))
        entries += _enc_len(1, _enc_len(1, key.encode()) + _enc_len(2, feat))
    return _enc_len(1, entries)


def write_tfrecord(path: str | Path, payloads: Iterable[bytes]) -> None:
    """Write payloads as TFRecord records (CRC fields zero: cxrkit and TF's readers don't check them)."""

    def write(fh) -> None:
        for p in payloads:
            fh.write(struct.pack("<QI", len(p), 0) + p + struct.pack("<I", 0))

    write_with(path, write)


class TFRecordDataset(XRayDataset):
    """Images and labels from ``*.tfrec``/``*.tfrecord`` shards; one index pass, then random access."""

    source = "tfrecord"

    def __init__(
        self, paths: str | Path | Sequence[str | Path], *, metadata: pd.DataFrame | None = None
    ) -> None:
        files = _shard_files(paths)
        ids, targets, self._where = [], [], []
        for f_idx, path in enumerate(files):
            for offset, payload in iter_records(path):
                try:
                    ex = parse_example(payload)
                except (IndexError, ValueError, UnicodeDecodeError, struct.error) as err:
                    raise TFRecordError(f"{path}: corrupt Example at byte {offset} ({err})") from None
                absent = [k for k in ("image", *TFRECORD_LABEL_FEATURES) if k not in ex]
                if absent:
                    raise TFRecordError(f"{path}: record at byte {offset} lacks feature(s) {absent}")
                image_id = ex["image_id"][0].decode() if ex.get("image_id") else f"{path.stem}_{offset}"  # type: ignore[union-attr]
                ids.append(image_id)
                targets.append([float(ex[k][0]) for k in TFRECORD_LABEL_FEATURES])  # type: ignore[arg-type]
                self._where.append((f_idx, offset))
        self.files = files
        y = align_by_name(
            np.array(targets, dtype=np.float32).reshape(-1, 15), TFRECORD_LABEL_FEATURES, LABELS
        )
        patients = [i.split("_")[0].lstrip("0") or "0" for i in ids]
        meta = standard_meta(ids, patients, y, LABELS)
        if metadata is not None:  # patient, age, sex, view from NIH metadata, by image name
            extra = metadata.drop_duplicates("image_id").set_index("image_id")
            for col in ("patient_id", "age", "sex", "view"):
                joined = meta["image_id"].map(extra[col])
                meta[col] = joined.where(joined.notna(), meta[col])
        super().__init__(meta, LABELS, task="multilabel")

    def load_image(self, i: int) -> np.ndarray:
        f_idx, offset = self._where[i]
        ex = parse_example(read_record(self.files[f_idx], offset))
        name = f"{self.files[f_idx]}[{self.meta['image_id'].iat[i]}]"
        return decode_bytes(ex["image"][0], name)  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        return super().fingerprint() + "".join(file_fingerprint(f) for f in self.files)


def _shard_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for item in (Path(i).resolve() for i in items):
        if item.is_dir():
            files.extend(sorted(p for p in item.iterdir() if ".tfrec" in p.name))
        elif item.exists():
            files.append(item)
        else:
            raise FileNotFoundError(f"TFRecord shard or folder {item} not found")
    if not files:
        raise FileNotFoundError(f"no *.tfrec / *.tfrecord files in {items}")
    return files


def from_config(cfg) -> TFRecordDataset:
    """``data.source: tfrecord``: Kaggle shards, patient/age/sex/view joined from the NIH metadata."""
    from cxrkit.data.base import require_path
    from cxrkit.data.nih import NIHDataset

    path = require_path(cfg)
    try:
        meta = NIHDataset(csv=cfg.csv).meta
    except (FileNotFoundError, ValueError):
        meta = None
    return TFRecordDataset(path, metadata=meta)
