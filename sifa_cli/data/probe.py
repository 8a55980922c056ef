"""What a media file's container headers declare, read without any decoder: the size of its video
frames, and which kinds of streams it holds.

Decoders allocate a whole frame before they can report its size (decord only tells the size of a
decoded frame; FFmpeg's stream probing decodes one), so a small file that declares huge frames
would take gigabytes before a size check could run. These readers look only at header boxes,
chunks and elements: MP4/MOV, AVI, Matroska/WebM and Y4M. Anything else, or anything they do not
understand, gives None and the decoders' own size check applies. The stream kinds let an error say
"no video stream" for an audio file (WAV, FLAC, MP3, or an MP4/AVI/Matroska with audio tracks only).
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
    streams = _streams(path)
    sizes = [size for kind, size in streams or () if kind == "video" and size and size[0] > 0 and size[1] > 0]
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


def stream_kinds(path: Path) -> Optional[set[str]]:
    """The kinds of stream ("video", "audio", "other") the file declares, or None when unknown."""
    streams = _streams(path)
    return None if streams is None else {kind for kind, _ in streams}


Stream = tuple[str, Optional[Size]]  # kind, and for video the declared frame size when known


def _streams(path: Path) -> Optional[list[Stream]]:
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
            size = Path(path).stat().st_size
            if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
                return list(_mp4_streams(handle, 0, size, 0))
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                return list(_avi_streams(handle, 12, min(size, 8 + int.from_bytes(head[4:8], "little"))))
            if head[:4] == b"RIFF" and head[8:12] == b"WAVE" or head[:4] == b"fLaC" or head[:3] == b"ID3":
                return [("audio", None)]
            if head[:4] == b"\x1a\x45\xdf\xa3":
                return list(_matroska_streams(handle, size))
            if head[:9] == b"YUV4MPEG2":
                return [("video", _y4m_size(handle))]
    except (OSError, struct.error, ValueError, IndexError, RecursionError):
        return None
    return None


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


def _mp4_streams(handle: BinaryIO, start: int, end: int, depth: int) -> Iterator[Stream]:
    if depth > 6:
        return
    for kind, payload, stop in _mp4_boxes(handle, start, end):
        if kind == b"trak":
            yield from _mp4_track(handle, payload, stop)
        elif kind == b"moov":
            yield from _mp4_streams(handle, payload, stop, depth + 1)


_MP4_HANDLERS = {b"vide": "video", b"soun": "audio"}


def _mp4_track(handle: BinaryIO, start: int, end: int) -> Iterator[Stream]:
    """A video track's sample-description sizes (what the decoder is told), else its display size."""
    found: dict[str, object] = {"kind": None, "coded": [], "display": None}

    def walk(begin: int, stop: int, depth: int) -> None:
        for kind, payload, box_end in _mp4_boxes(handle, begin, stop):
            if kind in _MP4_CONTAINERS and depth < 6:
                walk(payload, box_end, depth + 1)
            elif kind == b"hdlr":
                # the media handler ('vide', 'soun', ...) is in mdia; QuickTime adds a data handler in minf
                if found["kind"] is None or found["kind"] == "other":
                    found["kind"] = _MP4_HANDLERS.get(_read(handle, payload, box_end)[8:12], "other")
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
    if found["kind"] == "video":
        for size in found["coded"] or [found["display"]]:  # type: ignore[union-attr]
            yield "video", size  # type: ignore[misc]
    elif found["kind"] is not None:
        yield found["kind"], None  # type: ignore[misc]


# -- AVI: RIFF AVI / LIST hdrl / {avih, LIST strl / {strh, strf}} -------------------------------


def _avi_streams(handle: BinaryIO, start: int, end: int) -> Iterator[Stream]:
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
                yield from _avi_list(handle, position + 12, min(position + 8 + length, end))
        position += 8 + length + (length & 1)


_AVI_STREAMS = {b"vids": "video", b"auds": "audio"}


def _avi_list(handle: BinaryIO, start: int, end: int) -> Iterator[Stream]:
    """The streams of an hdrl or strl list (avih's frame size is only a fallback for odd writers)."""
    position, stream_type = start, b""
    for _ in range(_MAX_ITEMS):
        if position + 8 > end:
            return
        handle.seek(position)
        kind, length = struct.unpack("<4sI", handle.read(8))
        data = _read(handle, position + 8, min(position + 8 + length, end, position + 8 + 64))
        if kind == b"strh" and len(data) >= 4:
            stream_type = data[:4]
            if stream_type != b"vids":
                yield _AVI_STREAMS.get(stream_type, "other"), None
        elif kind == b"strf" and stream_type == b"vids" and len(data) >= 12:
            width, height = struct.unpack("<ii", data[4:12])
            yield "video", (abs(width), abs(height))  # a negative height means top-down rows
        elif kind == b"LIST" and data[:4] == b"strl":
            yield from _avi_list(handle, position + 12, min(position + 8 + length, end))
        position += 8 + length + (length & 1)


# -- Matroska / WebM: Segment / Tracks / TrackEntry / Video / {PixelWidth, PixelHeight} ----------

_SEGMENT, _TRACKS, _TRACK_ENTRY, _VIDEO = 0x18538067, 0x1654AE6B, 0xAE, 0xE0
_PIXEL_WIDTH, _PIXEL_HEIGHT, _CLUSTER, _TRACK_TYPE = 0xB0, 0xBA, 0x1F43B675, 0x83
_MATROSKA_TRACK_TYPES = {1: "video", 2: "audio"}


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


def _matroska_streams(handle: BinaryIO, file_size: int) -> Iterator[Stream]:
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
                track_type, size = 0, None
                for item, item_start, item_stop in _ebml_elements(handle, entry_start, entry_stop):
                    if item == _VIDEO:
                        size = _matroska_video(handle, item_start, item_stop)
                    elif item == _TRACK_TYPE and 0 < item_stop - item_start <= 8:
                        handle.seek(item_start)
                        track_type = int.from_bytes(handle.read(item_stop - item_start), "big")
                kind = "video" if size is not None else _MATROSKA_TRACK_TYPES.get(track_type, "other")
                yield kind, size


def _matroska_video(handle: BinaryIO, start: int, end: int) -> Size:
    values = {_PIXEL_WIDTH: 0, _PIXEL_HEIGHT: 0}
    for element, payload, stop in _ebml_elements(handle, start, end):
        if element in values and 0 < stop - payload <= 8:
            handle.seek(payload)
            values[element] = int.from_bytes(handle.read(stop - payload), "big")
    return values[_PIXEL_WIDTH], values[_PIXEL_HEIGHT]


# -- Y4M: "YUV4MPEG2 W<width> H<height> ..." ---------------------------------------------------


def _y4m_size(handle: BinaryIO) -> Optional[Size]:
    handle.seek(0)
    line = handle.read(256).split(b"\n", 1)[0]
    fields = {token[:1]: token[1:] for token in line.split()[1:]}
    return (int(fields[b"W"]), int(fields[b"H"])) if b"W" in fields and b"H" in fields else None
