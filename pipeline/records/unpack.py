"""Compressed and re-encoded deliveries, opened into the plain files the parsers read.

Operators' systems deliver CDRs gzipped by a cron job, zipped by a mail gateway, or exported as
UTF-16 by a Windows tool. What a delivery is wrapped in is told from its first bytes, never its
name (gzip under a `.csv` name is common). The seal and bronze keep the delivered bytes; the
parsers read what is inside: each member decompressed as a stream into a private file (memory
stays bounded whatever the size), its digest and size recorded in the signed parse entry, and
text in UTF-16 or UTF-32 written again as UTF-8.

Decompression is bounded against bombs: a delivery whose content would pass `max_bytes`, or
grow past `max_ratio` times its delivered size, is stopped at the limit and quarantined whole
(`too_large_when_decompressed`). Everything else that cannot be opened names its cause:
`compressed:<kind>` (corrupt, encrypted, nested, or a kind no reader exists for here),
`encoding:<name>` (text that does not decode).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import lzma
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.core import layout
from pipeline.records.sources.base import FileFormatError

BLOCK = 1 << 20

#: single-stream compressors read here, by their first bytes
STREAMS: dict[str, tuple[bytes, Callable[..., IO[bytes]]]] = {
    "gzip": (b"\x1f\x8b", gzip.open),
    "bzip2": (b"BZh", bz2.open),
    "xz": (b"\xfd7zXZ\x00", lzma.open),
}
ZIP = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
#: kinds recognised but not read: refused as `compressed:<kind>`, never parsed as text
UNREAD = {
    "zstd": b"\x28\xb5\x2f\xfd",
    "7z": b"7z\xbc\xaf\x27\x1c",
    "rar": b"Rar!\x1a\x07",
    "lz4": b"\x04\x22\x4d\x18",
    "compress": b"\x1f\x9d",
    "lzip": b"LZIP",
}
#: byte-order marks of encodings read into UTF-8 (longest first: UTF-32 LE starts as UTF-16 LE)
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (b"\x84\x31\x95\x33", "gb18030"),
)
#: byte-order marks of encodings that are not read: refused as `encoding:<name>`
UNREAD_BOMS = {b"+/v": "utf-7", b"\xf7\x64\x4c": "utf-1", b"\xdd\x73\x66\x73": "utf-ebcdic"}
#: the second magic of a bzip2 stream (a block, or the end of an empty stream): "BZh9," alone
#: can start a CSV
_BZIP2_BLOCKS = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
#: what a damaged stream or archive raises while it is read
_DAMAGED = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, RuntimeError)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """How far a delivery may grow when opened (`CDR_UNPACK_MAX_BYTES`, `_MAX_RATIO`)."""

    max_bytes: int = 32 << 30
    max_ratio: float = 500.0
    #: the ratio is only judged past this many bytes: a tiny file may compress very well
    ratio_floor: int = 64 << 20
    #: a zip of more entries is refused: each is a file to write and a line of the signed
    #: parse entry (a month of hourly files from one switch is 744)
    max_members: int = 2000

    @classmethod
    def of(cls, settings: Any) -> Limits:
        """The deployment's limits (`Settings.unpack_max_bytes`, `unpack_max_ratio`)."""
        return cls(settings.unpack_max_bytes, settings.unpack_max_ratio)


@dataclass(frozen=True)
class Part:
    """One plain file to parse: a member of a delivery, or the delivery itself."""

    label: str
    path: Path
    #: digest and size of the member's bytes as decompressed (before any re-encoding)
    sha256: str
    size: int
    #: the encoding read into UTF-8 (None: read as delivered)
    encoding: str | None = None

    @property
    def readable(self) -> bool:
        """Whether there is anything to parse (a UTF-16 member that is only a BOM is not)."""
        return self.path.stat().st_size > 0


@dataclass(frozen=True)
class Unpacked:
    """What a delivery holds, in the order its parts are parsed."""

    compression: str | None
    parts: tuple[Part, ...]
    #: zip members not parsed because they hold no records (folders, macOS metadata)
    skipped: tuple[str, ...] = ()

    @property
    def plain(self) -> bool:
        """Parsed as delivered: no decompression, no re-encoding."""
        return self.compression is None and all(p.encoding is None for p in self.parts)

    @property
    def size(self) -> int:
        return sum(p.path.stat().st_size for p in self.parts)

    def entry(self) -> dict[str, Any]:
        """For the signed parse entry (empty for a plain file): `verify --deep` opens the
        original again and checks each member against it."""
        if self.plain:
            return {}
        members = [
            {"member": p.label, "sha256": p.sha256, "bytes": p.size}
            | ({"encoding": p.encoding} if p.encoding else {})
            for p in self.parts
        ]
        return {"compression": self.compression, "members": members} | (
            {"skipped_members": list(self.skipped)} if self.skipped else {}
        )


def compression_of(head: bytes) -> str | None:
    """The compression a file's first bytes announce (None: none)."""
    for kind, (magic, _) in STREAMS.items():
        if head.startswith(magic) and (kind != "bzip2" or head[4:10] in _BZIP2_BLOCKS):
            return kind
    if head.startswith(ZIP):
        return "zip"
    return next((kind for kind, magic in UNREAD.items() if head.startswith(magic)), None)


def open_delivery(
    path: Path, label: str, sha256: str, size: int, folder: Path, limits: Limits
) -> Unpacked:
    """The plain files inside the delivery at `path` (itself when it is plain), written under
    `folder`; FileFormatError when it cannot be opened."""
    budget = _Budget(size, limits)
    with open(path, "rb") as f:
        head = f.read(64)
    kind = compression_of(head)
    if kind is None:
        return Unpacked(None, (_decoded(Part(label, path, sha256, size), folder, budget),))
    if kind == "zip":
        return _zip(path, label, folder, budget)
    if kind not in STREAMS:
        raise FileFormatError(f"compressed:{kind}", f"{kind} is not read here; send gzip, bzip2, xz or zip")  # fmt: skip
    target = folder / f"part-{0:04d}"
    try:
        with STREAMS[kind][1](path, "rb") as stream:
            digest, written = _copy(stream, target, budget)
    except FileFormatError:
        raise
    except _DAMAGED as exc:
        raise FileFormatError(f"compressed:{kind}", f"the {kind} stream is damaged or cut short ({type(exc).__name__})") from None  # fmt: skip
    inner = _strip_suffix(label, kind)
    return Unpacked(kind, (_decoded(Part(inner, target, digest, written), folder, budget),))


class _Budget:
    """The bytes a delivery may still grow to; refuses it once it passes a limit."""

    def __init__(self, delivered: int, limits: Limits) -> None:
        self.delivered, self.limits, self.used = max(delivered, 1), limits, 0

    def spend(self, n: int) -> None:
        self.used += n
        ratio = self.used / self.delivered
        if self.used > self.limits.max_bytes or (
            self.used > self.limits.ratio_floor and ratio > self.limits.max_ratio
        ):
            raise FileFormatError(
                "too_large_when_decompressed",
                f"stopped after {self.used:,} bytes from {self.delivered:,} delivered "
                f"(limits: {self.limits.max_bytes:,} bytes, {self.limits.max_ratio:g}× the "
                "delivered size): a decompression bomb, or limits to raise",
            )


def _copy(stream: IO[bytes], target: Path, budget: _Budget) -> tuple[str, int]:
    """Stream `stream` into `target` within the budget: (sha256, bytes)."""
    digest, written = hashlib.sha256(), 0
    with open(target, "wb") as out:
        while block := stream.read(BLOCK):
            budget.spend(len(block))
            digest.update(block)
            out.write(block)
            written += len(block)
    return digest.hexdigest(), written


def _zip(path: Path, label: str, folder: Path, budget: _Budget) -> Unpacked:
    """Every member of a zip that holds records, in archive order."""
    parts, skipped = [], []
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > budget.limits.max_members:
                raise FileFormatError("compressed:zip", f"{len(entries):,} entries, more than the {budget.limits.max_members:,} read in one delivery: send fewer per archive")  # fmt: skip
            for n, info in enumerate(entries):
                base = info.filename.rsplit("/", 1)[-1]
                name = layout.file_label(base or info.filename)
                mac = info.filename.startswith("__MACOSX/") or base == ".DS_Store"
                if info.is_dir() or mac:
                    skipped.append(name)
                    continue
                if info.flag_bits & 0x1:
                    raise FileFormatError("compressed:zip", "a member is encrypted: send it without a password")  # fmt: skip
                target = folder / f"part-{n:04d}"
                with archive.open(info) as stream:
                    digest, written = _copy(stream, target, budget)
                parts.append(_decoded(Part(name, target, digest, written), folder, budget))
    except FileFormatError:
        raise
    except NotImplementedError:
        raise FileFormatError("compressed:zip", "a member uses a compression method not read here (deflate, bzip2, lzma and stored are)") from None  # fmt: skip
    except (*_DAMAGED, zipfile.LargeZipFile) as exc:
        raise FileFormatError("compressed:zip", f"the zip archive is damaged or cut short ({type(exc).__name__})") from None  # fmt: skip
    if not parts:
        raise FileFormatError("compressed:zip", "the archive has no member that holds records")
    return Unpacked("zip", tuple(parts), tuple(skipped))


def _decoded(part: Part, folder: Path, budget: _Budget) -> Part:
    """The part itself, or its text written again as UTF-8 when it is in another encoding;
    a part that is itself compressed is refused (archives are opened one level deep)."""
    with open(part.path, "rb") as f:
        head = f.read(4096)
    inner = compression_of(head)
    if inner is not None:
        raise FileFormatError(f"compressed:{inner}", f"{inner} inside a compressed delivery: archives are opened one level deep")  # fmt: skip
    encoding = _encoding(head)
    if encoding is None:
        return part
    target = folder / f"{part.path.name}.utf8"
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    done = 0
    try:
        with open(part.path, "rb") as src, open(target, "wb") as out:
            while block := src.read(BLOCK):
                text = decoder.decode(block).encode("utf-8")
                budget.spend(len(text))
                out.write(text)
                done += len(block)
            out.write(decoder.decode(b"", final=True).encode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"encoding:{encoding}", f"not valid {encoding} at byte {done + exc.start:,}") from None  # fmt: skip
    return Part(part.label, target, part.sha256, part.size, encoding)


def _encoding(head: bytes) -> str | None:
    """The encoding a file's first bytes show when it is not UTF-8: a byte-order mark, or
    UTF-16 without one (every other byte NUL, the rest not)."""
    for bom, name in UNREAD_BOMS.items():
        if head.startswith(bom):
            raise FileFormatError(f"encoding:{name}", f"{name} is not read here; send UTF-8 or UTF-16")  # fmt: skip
    for bom, name in BOMS:
        if head.startswith(bom):
            return name
    sample = head[: len(head) - len(head) % 2]
    if len(sample) >= 16:
        half = len(sample) // 2
        even, odd = sample[0::2].count(0) / half, sample[1::2].count(0) / half
        if odd >= 0.9 and even <= 0.1:
            return "utf-16-le"
        if even >= 0.9 and odd <= 0.1:
            return "utf-16-be"
    return None


def _strip_suffix(label: str, kind: str) -> str:
    """`cdr.csv.gz` → `cdr.csv`: the member of a single-stream delivery."""
    for suffix in {"gzip": (".gz", ".gzip"), "bzip2": (".bz2", ".bzip2"), "xz": (".xz",)}[kind]:
        if label.lower().endswith(suffix) and len(label) > len(suffix):
            return label[: -len(suffix)]
    return label
