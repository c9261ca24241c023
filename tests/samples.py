"""Sample files the tests upload: real content, so magic-byte sniffing accepts it."""

from __future__ import annotations

import struct
import zlib


def make_png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (255, 128, 0)) -> bytes:
    """A real, decodable RGB PNG of one colour."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data))
        return struct.pack(">I", len(data)) + tag + data + crc

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
