"""Media files built byte by byte for tests: frames far larger than their file, audio-only files."""

from __future__ import annotations

import struct
import wave
from pathlib import Path


def flat_jpeg(width: int, height: int) -> bytes:
    """A valid baseline grayscale JPEG of a flat grey image: Huffman tables with one 1-bit code
    each make every 8x8 block 2 bits, so the image costs width*height/256 bytes."""

    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    quant = segment(0xDB, b"\x00" + bytes([1] * 64))
    frame = segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    one_code = bytes([1] + [0] * 15)  # one code of length 1 ...
    huffman = segment(0xC4, b"\x00" + one_code + b"\x00" + b"\x10" + one_code + b"\x00")  # ... for DC 0 and EOB
    scan = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    bits = 2 * -(-width // 8) * -(-height // 8)
    data = bytes(bits // 8) + (bytes([(1 << (8 - bits % 8)) - 1]) if bits % 8 else b"")
    return b"\xff\xd8" + quant + frame + huffman + scan + data + b"\xff\xd9"


def mjpeg_avi(path: Path, width: int, height: int, frames: int = 2, fps: int = 25, held: int = 0) -> Path:
    """A valid Motion-JPEG AVI of flat grey frames that decoders really decode at full size:
    8200x8200 frames (above sifa's limit) take about 260 KB each in the file. held: each frame is
    followed by this many empty chunks, which tell a player to keep showing it (capture software
    writes them for frames it did not get, as in OpenCV's sample tree.avi)."""
    jpeg = flat_jpeg(width, height)
    chunks = frames * (1 + held)

    def chunk(fourcc: bytes, body: bytes) -> bytes:
        return fourcc + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")

    def riff_list(kind: bytes, body: bytes) -> bytes:
        return b"LIST" + struct.pack("<I", len(body) + 4) + kind + body

    avih = struct.pack("<10I4I", 1_000_000 // fps, 0, 0, 0x10, chunks, 0, 1, len(jpeg), width, height, 0, 0, 0, 0)
    strh = b"vids" + b"MJPG" + struct.pack("<IHHIIIIIIIIhhhh", 0, 0, 0, 0, 1, fps, 0, chunks, len(jpeg),
                                           0xFFFFFFFF, 0, 0, 0, width, height)
    strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0)
    header = riff_list(b"hdrl", chunk(b"avih", avih) + riff_list(b"strl", chunk(b"strh", strh) + chunk(b"strf", strf)))
    frame_chunk, empty_chunk = chunk(b"00dc", jpeg), chunk(b"00dc", b"")
    movi_body, index, offset = b"", b"", 4  # idx1 offsets count from the "movi" fourcc
    for _ in range(frames):
        for body, flags, size in [(frame_chunk, 0x10, len(jpeg))] + [(empty_chunk, 0, 0)] * held:
            index += b"00dc" + struct.pack("<III", flags, offset, size)
            movi_body += body
            offset += len(body)
    movi = riff_list(b"movi", movi_body)
    body = b"AVI " + header + movi + chunk(b"idx1", index)
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return Path(path)


def audio_only_wav(path: Path, seconds: float = 1.0, rate: int = 8000) -> Path:
    """A mono 16-bit WAV file of a quiet ramp: a real media file with no video stream."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", (i % 200) - 100) for i in range(int(seconds * rate))))
    return Path(path)


def audio_only_avi(path: Path, seconds: float = 1.0, rate: int = 8000) -> Path:
    """An AVI holding one 16-bit PCM audio stream and no video stream."""
    samples = b"".join(struct.pack("<h", (i % 200) - 100) for i in range(int(seconds * rate)))

    def chunk(fourcc: bytes, body: bytes) -> bytes:
        return fourcc + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")

    def riff_list(kind: bytes, body: bytes) -> bytes:
        return b"LIST" + struct.pack("<I", len(body) + 4) + kind + body

    avih = struct.pack("<10I4I", 0, 0, 0, 0x10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0)
    strh = b"auds" + b"\x00" * 4 + struct.pack("<IHHIIIIIIIIhhhh", 0, 0, 0, 0, 2, 2 * rate, 0, len(samples) // 2,
                                               len(samples), 0xFFFFFFFF, 2, 0, 0, 0, 0)
    strf = struct.pack("<HHIIHHH", 1, 1, rate, 2 * rate, 2, 16, 0)
    header = riff_list(b"hdrl", chunk(b"avih", avih) + riff_list(b"strl", chunk(b"strh", strh) + chunk(b"strf", strf)))
    movi = riff_list(b"movi", chunk(b"00wb", samples))
    index = b"00wb" + struct.pack("<III", 0x10, 4, len(samples))
    body = b"AVI " + header + movi + chunk(b"idx1", index)
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return Path(path)
