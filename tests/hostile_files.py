"""Hostile files, generated in the test (nothing big is committed): bombs that are small on disk.

The bombs repeat one deflate block: compressing 1 MiB of a byte with a full flush gives a self-contained
block of about 1 KiB, and that block repeated N times, then an empty final block, is a valid deflate stream
that inflates to N MiB. A 1 GiB bomb is about 1 MiB on disk and takes a second to build (its checksums).
"""

from __future__ import annotations

import random
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

MIB = 1024 * 1024
GIB = 1024 * MIB
_EMPTY_FINAL_BLOCK = b"\x03\x00"


def _deflate_repeated(unit: bytes, mib: int) -> bytes:
    """Raw deflate of ``unit`` (1 MiB) repeated ``mib`` times."""
    assert len(unit) == MIB
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(unit) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * mib + _EMPTY_FINAL_BLOCK


def _checksum(function: Callable[[bytes, int], int], unit: bytes, times: int, start: int) -> int:
    value = start
    for _ in range(times):
        value = function(unit, value)
    return value


def _zip(entries: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip archive of (name, deflated data, crc, compressed size, uncompressed size) entries."""
    out, central = bytearray(), bytearray()
    for name, data, crc, compressed, uncompressed in entries:
        encoded = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, compressed, uncompressed, len(encoded), 0)
        out += encoded + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50, 20, 20, 0, 8, 0, 0, crc, compressed, uncompressed, len(encoded), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + end)


def _deflated_entry(name: str, content: bytes) -> tuple[str, bytes, int, int, int]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(content) + compressor.flush()
    return name, data, zlib.crc32(content), len(data), len(content)


_CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    b'content-types"><Default Extension="xml" ContentType="application/xml"/><Override '
    b'PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
    b'wordprocessingml.document.main+xml"/></Types>'
)


def docx_zip_bomb(inflated_mib: int = 1024) -> bytes:
    """A .docx whose word/document.xml inflates to ``inflated_mib`` MiB of spaces (valid XML whitespace)."""
    unit = b" " * MIB
    data, crc = _deflate_repeated(unit, inflated_mib), _checksum(zlib.crc32, unit, inflated_mib, 0)
    entries = [
        _deflated_entry("[Content_Types].xml", _CONTENT_TYPES),
        ("word/document.xml", data, crc, len(data), inflated_mib * MIB),
    ]
    return _zip(entries)


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF of numbered ``objects`` (1..n, the catalog first) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def pdf_flate_bomb(inflated_mib: int = 1024) -> bytes:
    """A one-page PDF whose content stream (FlateDecode) inflates to ``inflated_mib`` MiB of text operators."""
    unit = (b"BT /F1 12 Tf 72 720 Td (bomb) Tj ET\n" * (MIB // 36 + 1))[:MIB]
    raw, adler = _deflate_repeated(unit, inflated_mib), _checksum(zlib.adler32, unit, inflated_mib, 1)
    stream = b"\x78\xda" + raw + struct.pack(">I", adler)
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    )


def pdf_with_pages(pages: int, text: str = "Page text") -> bytes:
    """A valid PDF of ``pages`` pages, each showing ``text`` (they share one content stream)."""
    content = b"BT /F1 12 Tf 72 720 Td (%s) Tj ET" % text.encode("latin-1")
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R /Resources << /Font << /F1 4 0 R >> >> >>"  # noqa: E501
    return _pdf(objects + [page] * pages)


def deeply_nested_html(depth: int = 100_000) -> bytes:
    return b"<html><body>" + b"<div>" * depth + b"deep text" + b"</div>" * depth + b"</body></html>"


def large_html(paragraphs: int) -> bytes:
    """A valid, ordinary article of ``paragraphs`` paragraphs: slow to parse only because it is long."""
    body = "".join(
        f"<h2>Section {i}</h2><p>Paragraph {i} of the long report says the measured value was {i * 7 % 101} "
        f"units, which the committee noted in its minutes for item {i}.</p>"
        for i in range(paragraphs)
    )
    return f"<html><head><title>Long report</title></head><body><article>{body}</article></body></html>".encode()


def random_bytes(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def elf_binary() -> bytes:
    """The first 256 KiB of the running Python interpreter: a real ELF executable (on Linux)."""
    data = Path(sys.executable).resolve().read_bytes()[: 256 * 1024]
    assert data.startswith(b"\x7fELF"), "these tests expect a Linux (ELF) Python"
    return data


def png_image(width: int = 64, height: int = 64) -> bytes:
    """A valid grey PNG image."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + bytes(range(width)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
