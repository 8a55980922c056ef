"""The frame size a video file declares in its container headers, read without any decoder.

Decoders allocate a whole frame before they can report its size (decord only tells the size of a
decoded frame; FFmpeg's stream probing decodes one), so a small file that declares huge frames
would take gigabytes before a size check could run. These readers look only at header boxes,
chunks and elements: MP4/MOV, AVI, Matroska/WebM and Y4M. Anything else, or anything they do not
understand, gives None and the decoders' own size check applies.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

Size = tuple[int, int]  # width, height

# Header structures are small; anything bigger is not read (the decoders' check still applies).
_MAX_HEADER_BYTES = 1 << 20
_MAX_ITEMS = 4096  # boxes, chunks or elements looked at per file


def declared_frame_size(path: Path) -> Optional[Size]:
    """The largest video frame size the file's container declares, or None when unknown."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
            size = Path(path).stat().st_size
            if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
                sizes = list(_mp4_sizes(handle, 0, size, 0))
            elif head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                sizes = list(_avi_sizes(handle, 12, min(size, 8 + int.from_bytes(head[4:8], "little"))))
            elif head[:4] == b"\x1a\x45\xdf\xa3":
                sizes = list(_matroska_sizes(handle, size))
            elif head[:9] == b"YUV4MPEG2":
                sizes = _y4m_size(handle)
            else:
                return None
    except (OSError, struct.error, ValueError, IndexError, RecursionError):
        return None
    sizes = [(w, h) for w, h in sizes if w > 0 and h > 0]
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


# -- MP4 / MOV: moov/trak/{tkhd, mdia/{hdlr, minf/stbl/stsd}} ---------------------------------

_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _mp4_boxes(handle: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes between start and end."""
    position = start
    for _ in range(_MAX_ITEMS):
        if position + 8 > end:
            return
        handle.seek(position)
        box_size, kind = struct.unpack(">I4s", handle.read(8))
        header = 8
        if box_size == 1:
            box_size = struct.unpack(">Q", handle.read(8))[0]
            header = 16
        elif box_size == 0:
            box_size = end - position
        if box_size < header:
            return
        yield kind, position + header, min(position + box_size, end)
        position += box_size


def _read(handle: BinaryIO, start: int, end: int) -> bytes:
    if end - start > _MAX_HEADER_BYTES:
        return b""
    handle.seek(start)
    return handle.read(end - start)


def _mp4_sizes(handle: BinaryIO, start: int, end: int, depth: int) -> Iterator[Size]:
    if depth > 6:
        return
    for kind, payload, stop in _mp4_boxes(handle, start, end):
        if kind == b"trak":
            yield from _mp4_track_sizes(handle, payload, stop)
        elif kind == b"moov":
            yield from _mp4_sizes(handle, payload, stop, depth + 1)


def _mp4_track_sizes(handle: BinaryIO, start: int, end: int) -> Iterator[Size]:
    """A video track's sample-description sizes (what the decoder is told), else its display size."""
    found: dict[str, object] = {"video": False, "coded": [], "display": None}

    def walk(begin: int, stop: int, depth: int) -> None:
        for kind, payload, box_end in _mp4_boxes(handle, begin, stop):
            if kind in _MP4_CONTAINERS and depth < 6:
                walk(payload, box_end, depth + 1)
            elif kind == b"hdlr":
                # the media handler says 'vide'; QuickTime adds a data handler ('alis') in minf
                found["video"] = found["video"] or _read(handle, payload, box_end)[8:12] == b"vide"
            elif kind == b"tkhd":
                data = _read(handle, payload, box_end)
                if len(data) >= 8:
                    width, height = struct.unpack(">II", data[-8:])
                    found["display"] = (width >> 16, height >> 16)
            elif kind == b"stsd":
                data = _read(handle, payload, box_end)
                position = 8  # version/flags, entry count
                while position + 36 <= len(data):
                    entry_size = struct.unpack(">I", data[position:position + 4])[0]
                    width, height = struct.unpack(">HH", data[position + 32:position + 36])
                    found["coded"].append((width, height))  # type: ignore[union-attr]
                    if entry_size < 36:
                        break
                    position += entry_size

    walk(start, end, 0)
    if found["video"]:
        yield from found["coded"] or ([found["display"]] if found["display"] else [])  # type: ignore[misc]


# -- AVI: RIFF AVI / LIST hdrl / {avih, LIST strl / {strh, strf}} -------------------------------


def _avi_sizes(handle: BinaryIO, start: int, end: int) -> Iterator[Size]:
    position = start
    for _ in range(_MAX_ITEMS):
        if position + 8 > end:
            return
        handle.seek(position)
        kind, length = struct.unpack("<4sI", handle.read(8))
        if kind == b"LIST":
            list_type = handle.read(4)
            if list_type == b"movi":
                return  # the frames themselves: the headers are all before them
            if list_type in (b"hdrl", b"strl"):
                yield from _avi_list(handle, position + 12, min(position + 8 + length, end), list_type)
        position += 8 + length + (length & 1)


def _avi_list(handle: BinaryIO, start: int, end: int, list_type: bytes) -> Iterator[Size]:
    position, stream_type = start, b""
    for _ in range(_MAX_ITEMS):
        if position + 8 > end:
            return
        handle.seek(position)
        kind, length = struct.unpack("<4sI", handle.read(8))
        data = _read(handle, position + 8, min(position + 8 + length, end, position + 8 + 64))
        if kind == b"avih" and len(data) >= 40:
            yield struct.unpack("<II", data[32:40])
        elif kind == b"strh" and len(data) >= 4:
            stream_type = data[:4]
        elif kind == b"strf" and stream_type == b"vids" and len(data) >= 12:
            width, height = struct.unpack("<ii", data[4:12])
            yield abs(width), abs(height)  # a negative height means top-down rows
        elif kind == b"LIST" and data[:4] == b"strl":
            yield from _avi_list(handle, position + 12, min(position + 8 + length, end), b"strl")
        position += 8 + length + (length & 1)


# -- Matroska / WebM: Segment / Tracks / TrackEntry / Video / {PixelWidth, PixelHeight} ----------

_SEGMENT, _TRACKS, _TRACK_ENTRY, _VIDEO = 0x18538067, 0x1654AE6B, 0xAE, 0xE0
_PIXEL_WIDTH, _PIXEL_HEIGHT, _CLUSTER = 0xB0, 0xBA, 0x1F43B675


def _vint(handle: BinaryIO, keep_marker: bool) -> Optional[int]:
    first = handle.read(1)
    if not first:
        return None
    byte = first[0]
    length = next((i for i in range(8) if byte & (0x80 >> i)), None)
    if length is None:
        raise ValueError("bad EBML number")
    value = byte if keep_marker else byte & (0xFF >> (length + 1))
    rest = handle.read(length)
    if len(rest) != length:
        return None
    for extra in rest:
        value = (value << 8) | extra
    if not keep_marker and value == (1 << (7 * (length + 1))) - 1:
        return -1  # unknown size
    return value


def _ebml_elements(handle: BinaryIO, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(id, payload start, payload end) of the elements between start and end."""
    position = start
    for _ in range(_MAX_ITEMS):
        if position >= end:
            return
        handle.seek(position)
        element = _vint(handle, keep_marker=True)
        length = _vint(handle, keep_marker=False)
        if element is None or length is None:
            return
        payload = handle.tell()
        stop = end if length < 0 else min(payload + length, end)
        yield element, payload, stop
        if length < 0 and element != _SEGMENT:
            return  # an element of unknown size (a live recording's cluster): nothing after it is found
        position = stop


def _matroska_sizes(handle: BinaryIO, file_size: int) -> Iterator[Size]:
    for element, payload, stop in _ebml_elements(handle, 0, file_size):
        if element != _SEGMENT:
            continue
        for child, child_start, child_stop in _ebml_elements(handle, payload, stop):
            if child == _CLUSTER:
                break  # tracks are declared before the first cluster
            if child != _TRACKS:
                continue
            for entry, entry_start, entry_stop in _ebml_elements(handle, child_start, child_stop):
                if entry != _TRACK_ENTRY:
                    continue
                for item, item_start, item_stop in _ebml_elements(handle, entry_start, entry_stop):
                    if item == _VIDEO:
                        yield _matroska_video(handle, item_start, item_stop)


def _matroska_video(handle: BinaryIO, start: int, end: int) -> Size:
    values = {_PIXEL_WIDTH: 0, _PIXEL_HEIGHT: 0}
    for element, payload, stop in _ebml_elements(handle, start, end):
        if element in values and 0 < stop - payload <= 8:
            handle.seek(payload)
            values[element] = int.from_bytes(handle.read(stop - payload), "big")
    return values[_PIXEL_WIDTH], values[_PIXEL_HEIGHT]


# -- Y4M: "YUV4MPEG2 W<width> H<height> ..." ---------------------------------------------------


def _y4m_size(handle: BinaryIO) -> list[Size]:
    handle.seek(0)
    line = handle.read(256).split(b"\n", 1)[0]
    fields = {token[:1]: token[1:] for token in line.split()[1:]}
    return [(int(fields[b"W"]), int(fields[b"H"]))] if b"W" in fields and b"H" in fields else []
