"""A small Cog model for Augur's README: draws a tiny PNG sketch, one logged step at a time.

Pure Python (zlib and struct, no PIL), so `pip install cog coglet` is all it needs.
"""

import os
import struct
import tempfile
import time
import zlib

from cog import BasePredictor, Input, Path


def png(width: int, height: int, rgb: tuple) -> bytes:
    """A small RGB PNG shaded from `rgb`."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    r, g, b = rgb
    rows = b"".join(
        b"\x00" + b"".join(bytes(((r + x * 8) % 256, (g + y * 8) % 256, b)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PALETTES = {"warm": (200, 80, 40), "cool": (40, 120, 200)}


class Predictor(BasePredictor):
    def setup(self) -> None:
        print("sketch model ready")

    def predict(
        self,
        prompt: str = Input(description="What to sketch"),
        steps: int = Input(description="Drawing steps, one log line each", default=3, ge=1, le=20),
        palette: str = Input(description="Colours", default="warm", choices=["warm", "cool"]),
        size: int = Input(description="Width and height in pixels", default=16, ge=4, le=256),
    ) -> Path:
        for step in range(1, steps + 1):
            print(f"step {step}/{steps}: {prompt}", flush=True)
            time.sleep(0.1)
        out = Path(tempfile.mkdtemp(prefix="cog-sketch-")) / "sketch.png"
        out.write_bytes(png(size, size, PALETTES[palette]))
        return out
