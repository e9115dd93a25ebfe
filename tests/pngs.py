"""Hand-made PNG files for hostile-input tests: bombs and huge images written in a few hundred KB.

The pixel rows are streamed through zlib, so a 30,000 x 30,000 image costs no memory to write.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_header(width: int, height: int) -> bytes:
    """A grey PNG declaring ``width x height`` pixels and holding no real data: a bomb's first bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def write_png(
    path: Path,
    width: int,
    height: int,
    bit_depth: int = 8,
    colour: int = 0,
    pixels: bool = True,
    ramp: bool = False,
) -> Path:
    """An all-zero PNG of the given size (colour 0 grey, 2 RGB, 6 RGBA); ``pixels=False``: header only.

    ``ramp``: every row four left-to-right grey ramps instead (grey 8/16-bit only): content that passes
    the assessability rule, still compressing to almost nothing.
    """
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr))
        if pixels:
            comp = zlib.compressobj(9)
            row = b"\x00" * (1 + width * channels * bit_depth // 8)
            if ramp:
                tooth = max(width // 4, 2)  # four ramps side by side: structure a plane cannot explain
                ramps = (np.arange(width) % tooth) * ((1 << bit_depth) - 1) // (tooth - 1)
                values = ramps.astype(f">u{bit_depth // 8}")
                row = b"\x00" + values.tobytes()
            body = bytearray()
            for _ in range(height):
                body += comp.compress(row)
                if len(body) > 1 << 20:
                    fh.write(_chunk(b"IDAT", bytes(body)))
                    body.clear()
            body += comp.flush()
            fh.write(_chunk(b"IDAT", bytes(body)))
        else:
            fh.write(_chunk(b"IDAT", zlib.compress(b"\x00" * 64)))
        fh.write(_chunk(b"IEND", b""))
    return path
