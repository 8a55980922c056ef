"""Prediction results as JSON, JSON Lines or CSV records, written as they arrive, and resuming:
an output file that already holds results for some inputs lets a re-run skip them.

File names are carried exactly, even those that are not valid UTF-8 (Python holds their bytes as
surrogate escapes): JSON writes such a character as a "\\udcXX" escape, which json.loads turns
back into the same name; CSV writes the name's original bytes. A line is what ends in "\\n", when
writing and when reading back (names may hold U+2028 and other characters str.splitlines splits on).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
from pathlib import Path
from typing import IO, Any, Iterable, Optional

from sifa_cli.csvcells import neutralise_row, restore
from sifa_cli.fileio import atomic_write_path, hidden_prefix, lock_output, refuse_unsafe_output_file, writes_utf8
from sifa_cli.engine.records import VideoResult
from sifa_cli.errors import InputError

MACHINE_FORMATS = ("json", "jsonl", "csv")
CSV_FIELDS = ("path", "kind", "start", "end", "rank", "label", "score", "error", "settings", "size", "mtime_ns")
# Headers of older results files, still read: before sizes and times were recorded, and before settings.
LEGACY_CSV_FIELDS = CSV_FIELDS[:-2]
_OLD_CSV_FIELDS = CSV_FIELDS[:-3]
_IDENTITY = ("size", "mtime_ns")  # of the video when it was scored (see engine/resume.py)
_SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
CSV_KINDS = ("top", "window", "segment", "error")
_SURROGATE = re.compile("[\ud800-\udfff]")


def to_json(value: Any, ascii_only: bool = False, **options: Any) -> str:
    """json.dumps that keeps text readable (no \\u escapes for ordinary non-ASCII) yet always
    encodable as UTF-8: lone surrogates (undecodable bytes of a file name) become \\udcXX escapes.
    ascii_only: every non-ASCII character escaped, for a stream that cannot encode it."""
    text = json.dumps(value, ensure_ascii=ascii_only, **options)
    if _SURROGATE.search(text):  # can only sit inside a string literal, where an escape is valid JSON
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def text_lines(text: str) -> list[str]:
    """Lines as this module writes them: split on "\\n" only (a CSV line's "\\r" is removed)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def lock_results(output: Path):
    """Hold an exclusive lock on the results file `output` for a whole run, so that two runs can
    never interleave their records or replace each other's; a second run refuses at once."""
    return lock_output(output, "--output")


def _top(top) -> list[dict[str, Any]]:
    return [{"label": label, "score": score} for label, score in top]


def result_record(result: VideoResult, views: str) -> dict[str, Any]:
    """The JSON object for one input: {"path", "top": [{"label", "score"}...], ...} or
    {"path", "error"}; timelines add "window" and "stride" (seconds, as used for this video),
    "windows" and "segments"."""
    if not result.ok:
        return {"path": result.path, "error": result.error}
    record: dict[str, Any] = {"path": result.path, "top": _top(result.top), "views": views, "clips": result.inputs}
    if result.duration is not None:
        record["duration"] = round(result.duration, 3)
    if result.windows is not None:
        record["window"], record["stride"] = _seconds(result.window), _seconds(result.stride)
        if result.fps:
            record["fps"], record["frames"] = round(result.fps, 6), result.frames
        if result.shots is not None:
            record["shots"] = [{"shot": n, "start_frame": first, "end_frame": stop}
                               for n, (first, stop) in enumerate(result.shots, 1)]
        record["windows"] = [{"start": w.start, "end": w.end, "top": _top(w.top),
                              **({"shot": w.shot} if w.shot is not None else {})} for w in result.windows]
        record["segments"] = [_segment(s) for s in result.segments or []]
    if result.notes:
        record["notes"] = list(result.notes)
    return record


def _seconds(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 6)


def _segment(s) -> dict[str, Any]:
    record = {"start": round(s.start, 3), "end": round(s.end, 3), "label": s.label, "score": round(s.score, 6),
              "windows": s.windows}
    if s.start_frame is not None:
        record["start_frame"], record["end_frame"] = s.start_frame, s.end_frame
    if s.shot is not None:
        record["shot"] = s.shot
    if s.runner_up is not None:
        record["runner_up"] = {"label": s.runner_up[0], "score": s.runner_up[1]}
    record["uncertain"] = s.uncertain
    return record


def csv_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Long CSV layout: one row per ranked label ("top"), per window and rank ("window"), per
    merged segment ("segment"), or one "error" row. The first row of a result carries its
    settings as JSON."""
    path = record["path"]
    if "error" in record:
        return [{"path": path, "kind": "error", "error": record["error"]}]
    identity = {key: record[key] for key in _IDENTITY if key in record}
    rows = [{"path": path, "kind": "top", "rank": r, "label": t["label"], "score": t["score"], **identity}
            for r, t in enumerate(record["top"], 1)]
    if rows and record.get("settings") is not None:
        rows[0]["settings"] = json.dumps(record["settings"], ensure_ascii=False, separators=(",", ":"))
    for window in record.get("windows", []):
        rows += [{"path": path, "kind": "window", "start": window["start"], "end": window["end"], "rank": r,
                  "label": t["label"], "score": t["score"]} for r, t in enumerate(window["top"], 1)]
    for segment in record.get("segments", []):
        rows.append({"path": path, "kind": "segment", "start": segment["start"], "end": segment["end"],
                     "label": segment["label"], "score": segment["score"]})
    return rows


def output_format(output: Optional[Path], requested: Optional[str]) -> str:
    """The format to use: the one asked for, else the output file's suffix, else a table."""
    if requested is not None:
        if requested not in ("table",) + MACHINE_FORMATS:
            raise InputError(f"--format must be table, json, jsonl or csv; got {requested!r}")
        if requested == "table" and output is not None:
            raise InputError("--format table is for the terminal; with --output choose json, jsonl or csv")
        named = _SUFFIX_FORMATS.get(output.suffix.lower()) if output is not None else None
        if named is not None and named != requested:  # the next run, without --format, could not resume it
            raise InputError(f"--output {output} is named as {named} but --format {requested} was asked for; "
                             f"drop --format or name the file with .{requested}")
        return requested
    if output is None:
        return "table"
    fmt = _SUFFIX_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the format of {output} from its suffix; add --format json, jsonl or csv")
    return fmt


def path_key(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def read_finished(output: Path, fmt: str) -> list[dict[str, Any]]:
    """Successful records an earlier run left in `output` (failed ones are retried). A record cut
    off by an interrupted run is ignored."""
    if output.is_dir():
        raise InputError(f"--output {output} is a folder")
    refuse_unsafe_output_file(output, "--output")
    if not output.exists() or output.stat().st_size == 0:
        return []
    text = output.read_text(encoding="utf-8", errors="surrogateescape")
    if fmt != "json" and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # an interrupted run cut its last line short
    records: list[dict[str, Any]] = []
    if fmt == "jsonl":
        for line in filter(str.strip, text_lines(text)):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("path"), str):
                # Rewriting would lose this file's content: it is not ours to drop.
                raise InputError(f"--output {output} exists but is not a sifa results file; move it away")
            records.append(record)
    elif fmt == "json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError:
            raise InputError(f"--output {output} exists but is not a JSON list of results; move it away") from None
        if not isinstance(loaded, list) or not all(
                isinstance(r, dict) and isinstance(r.get("path"), str) for r in loaded):
            raise InputError(f"--output {output} exists but is not a JSON list of results; move it away")
        records = loaded
    else:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        headers = ([",".join(CSV_FIELDS)], [",".join(LEGACY_CSV_FIELDS)], [",".join(_OLD_CSV_FIELDS)])
        if text_lines(text)[:1] not in headers or not all(
                row.get("path") and row.get("kind") in CSV_KINDS and None not in row for row in rows):
            raise InputError(f"--output {output} exists but is not a sifa results CSV; move it away")
        records = _records_from_rows(rows)
    return [r for r in records if isinstance(r.get("path"), str) and "error" not in r]


def _records_from_rows(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Group CSV rows back by path; only "path", "error", "settings" and the raw rows matter for resuming."""
    by_path: dict[str, dict[str, Any]] = {}
    for row in rows:
        row = {key: restore(value) for key, value in row.items()}  # cells as they were before neutralising
        record = by_path.setdefault(row["path"], {"path": row["path"], "rows": []})
        if row.get("kind") == "error":
            record["error"] = row.get("error", "")
        if row.get("settings"):
            try:
                record["settings"] = json.loads(row["settings"])
            except json.JSONDecodeError:
                pass  # unreadable settings count as unknown
        for key in _IDENTITY:
            if row.get(key) and key not in record:
                record[key] = row[key]
        record["rows"].append({k: row.get(k) or "" for k in CSV_FIELDS})
    return list(by_path.values())


class _BytesSafeStream:
    """A text stream that writes a file name's undecodable bytes as they were (like a CSV file)
    when the stream's own encoding would refuse them."""

    def __init__(self, stream: IO[str]):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self._stream, "encoding", None) or "utf-8"
            buffer = getattr(self._stream, "buffer", None)
            if buffer is None:
                return self._stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            self._stream.flush()
            buffer.write(text.encode(encoding, "surrogateescape"))
            buffer.flush()
            return len(text)

    def flush(self) -> None:
        self._stream.flush()


def _remove_abandoned(path: Path) -> None:
    """Hidden new versions of `path` that a killed run left (its process is gone); the caller holds
    the results lock, so no live run is writing one."""
    prefix = hidden_prefix(path)
    for leftover in path.parent.glob(f"{glob.escape(prefix)}*.new{glob.escape(path.suffix)}"):
        pid = leftover.name[len(prefix) : -len(f".new{path.suffix}")]
        if pid.isdigit() and int(pid) != os.getpid():
            leftover.unlink(missing_ok=True)


class ResultWriter:
    """Writes records to a file or streams them to a text stream such as stdout. JSON Lines and
    CSV files get each record as it comes, so an interrupted run can be resumed; a JSON file
    (one list) is rewritten every JSON_EVERY records and at `close`.

    replace: the file at `path` is kept until `close` (however the run ends, Ctrl-C included) and
    then replaced; meanwhile the records go to a hidden file beside it. A run killed outright
    leaves the old file as it was."""

    JSON_EVERY = 50

    def __init__(self, fmt: str, path: Optional[Path] = None, stream: Optional[IO[str]] = None,
                 keep: Iterable[dict[str, Any]] = (), replace: bool = False):
        if fmt not in MACHINE_FORMATS:
            raise ValueError(fmt)
        self._final: Optional[Path] = None
        if replace and path is not None:
            self._final = path
            _remove_abandoned(path)
            path = path.with_name(f"{hidden_prefix(path)}{os.getpid()}.new{path.suffix}")
        self.fmt, self.path, self.stream = fmt, path, stream
        self.kept = list(keep)
        self.records: list[dict[str, Any]] = []
        self._handle: Optional[IO[str]] = None
        self._csv: Optional[csv.DictWriter] = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "json":
                self._rewrite_json()
            else:
                self._start_file()
        # A terminal or pipe whose encoding is not UTF-8 (PYTHONIOENCODING=ascii) gets JSON with
        # escapes, which every JSON reader turns back into the same text.
        self._ascii = stream is not None and not writes_utf8(stream)
        if path is None and stream is not None and fmt == "csv":
            self.stream = _BytesSafeStream(stream)
            self._csv = csv.DictWriter(self.stream, CSV_FIELDS)
            self._csv.writeheader()

    def _start_file(self) -> None:
        # Rewrite the kept records first (dropping failed and cut-off ones), then append.
        assert self.path is not None
        with atomic_write_path(self.path) as tmp, tmp.open("w", encoding="utf-8", errors="surrogateescape",
                                                             newline="") as handle:
            if self.fmt == "csv":
                writer = csv.DictWriter(handle, CSV_FIELDS)
                writer.writeheader()
                for record in self.kept:
                    writer.writerows(map(neutralise_row, record["rows"] if "rows" in record else csv_rows(record)))
            else:
                for record in self.kept:
                    handle.write(to_json(record) + "\n")
        self._handle = self.path.open("a", encoding="utf-8", errors="surrogateescape", newline="")
        if self.fmt == "csv":
            self._csv = csv.DictWriter(self._handle, CSV_FIELDS)

    def _rewrite_json(self) -> None:
        assert self.path is not None
        with atomic_write_path(self.path) as tmp:
            tmp.write_text(to_json(self.kept + self.records, indent=2) + "\n", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.fmt == "json":
            if self.path is not None and len(self.records) % self.JSON_EVERY == 0:
                self._rewrite_json()
            return
        target = self._handle if self._handle is not None else self.stream
        if target is None:
            return
        if self.fmt == "jsonl":
            target.write(to_json(record, ascii_only=self._ascii and target is self.stream) + "\n")
        else:
            assert self._csv is not None
            self._csv.writerows(map(neutralise_row, csv_rows(record)))
        target.flush()

    def close(self) -> None:
        if self.fmt == "json" and self.path is not None:
            self._rewrite_json()
        if self.fmt == "json" and self.path is None and self.stream is not None:
            self.stream.write(to_json(self.records, ascii_only=self._ascii, indent=2) + "\n")
            self.stream.flush()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._final is not None and self.path is not None:
            refuse_unsafe_output_file(self._final, "--output")
            os.replace(self.path, self._final)
            self.path, self._final = self._final, None
