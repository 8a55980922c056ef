"""Prediction results as JSON, JSON Lines or CSV records, written as they arrive, and resuming:
an output file that already holds results for some inputs lets a re-run skip them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import IO, Any, Iterable, Optional

from sifa_cli.fileio import atomic_write_path
from sifa_cli.engine.predict import VideoResult
from sifa_cli.errors import InputError

MACHINE_FORMATS = ("json", "jsonl", "csv")
CSV_FIELDS = ("path", "kind", "start", "end", "rank", "label", "score", "error", "size", "mtime_ns")
_OLD_CSV_FIELDS = CSV_FIELDS[:-2]  # results files written before sizes and times were recorded
_IDENTITY = ("size", "mtime_ns")  # of the video when it was scored (see engine/resume.py)
_SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def _top(top) -> list[dict[str, Any]]:
    return [{"label": label, "score": score} for label, score in top]


def result_record(result: VideoResult, views: str, window: Optional[float] = None,
                  stride: Optional[float] = None) -> dict[str, Any]:
    """The JSON object for one input: {"path", "top": [{"label", "score"}...], ...} or
    {"path", "error"}; timelines add "windows" and "segments"."""
    if not result.ok:
        return {"path": result.path, "error": result.error}
    record: dict[str, Any] = {"path": result.path, "top": _top(result.top), "views": views, "clips": result.inputs}
    if result.duration is not None:
        record["duration"] = round(result.duration, 3)
    if result.windows is not None:
        record["window"], record["stride"] = window, stride
        record["windows"] = [{"start": w.start, "end": w.end, "top": _top(w.top)} for w in result.windows]
        record["segments"] = [
            {"start": round(s.start, 3), "end": round(s.end, 3), "label": s.label, "score": round(s.score, 6),
             "windows": s.windows}
            for s in result.segments or []
        ]
    if result.notes:
        record["notes"] = list(result.notes)
    return record


def csv_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Long CSV layout: one row per ranked label ("top"), per window and rank ("window"), per
    merged segment ("segment"), or one "error" row."""
    path = record["path"]
    if "error" in record:
        return [{"path": path, "kind": "error", "error": record["error"]}]
    identity = {key: record[key] for key in _IDENTITY if key in record}
    rows = [{"path": path, "kind": "top", "rank": r, "label": t["label"], "score": t["score"], **identity}
            for r, t in enumerate(record["top"], 1)]
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
    if not output.exists() or output.stat().st_size == 0:
        return []
    text = output.read_text(encoding="utf-8", errors="replace")
    if fmt != "json" and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # an interrupted run cut its last line short
    records: list[dict[str, Any]] = []
    if fmt == "jsonl":
        for line in filter(str.strip, text.splitlines()):
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
        if not isinstance(loaded, list):
            raise InputError(f"--output {output} exists but is not a JSON list of results; move it away")
        records = [r for r in loaded if isinstance(r, dict)]
    else:
        if text.splitlines()[:1] not in ([",".join(CSV_FIELDS)], [",".join(_OLD_CSV_FIELDS)]):
            raise InputError(f"--output {output} exists but is not a sifa results CSV; move it away")
        records = _records_from_rows(list(csv.DictReader(io.StringIO(text))))
    return [r for r in records if isinstance(r.get("path"), str) and "error" not in r]


def _records_from_rows(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Group CSV rows back by path; only "path", "error" and the raw rows matter for resuming."""
    by_path: dict[str, dict[str, Any]] = {}
    for row in rows:
        record = by_path.setdefault(row["path"], {"path": row["path"], "rows": []})
        if row.get("kind") == "error":
            record["error"] = row.get("error", "")
        for key in _IDENTITY:
            if row.get(key) and key not in record:
                record[key] = row[key]
        record["rows"].append({k: row.get(k, "") for k in CSV_FIELDS})
    return list(by_path.values())


class ResultWriter:
    """Writes records to a file or streams them to a text stream such as stdout. JSON Lines and
    CSV files get each record as it comes, so an interrupted run can be resumed; a JSON file
    (one list) is rewritten every JSON_EVERY records and at `close`."""

    JSON_EVERY = 50

    def __init__(self, fmt: str, path: Optional[Path] = None, stream: Optional[IO[str]] = None,
                 keep: Iterable[dict[str, Any]] = ()):
        if fmt not in MACHINE_FORMATS:
            raise ValueError(fmt)
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
        elif stream is not None and fmt == "csv":
            self._csv = csv.DictWriter(stream, CSV_FIELDS)
            self._csv.writeheader()

    def _start_file(self) -> None:
        # Rewrite the kept records first (dropping failed and cut-off ones), then append.
        assert self.path is not None
        with atomic_write_path(self.path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
            if self.fmt == "csv":
                writer = csv.DictWriter(handle, CSV_FIELDS)
                writer.writeheader()
                for record in self.kept:
                    writer.writerows(record["rows"] if "rows" in record else csv_rows(record))
            else:
                for record in self.kept:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle = self.path.open("a", encoding="utf-8", newline="")
        if self.fmt == "csv":
            self._csv = csv.DictWriter(self._handle, CSV_FIELDS)

    def _rewrite_json(self) -> None:
        assert self.path is not None
        with atomic_write_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.kept + self.records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

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
            target.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            assert self._csv is not None
            self._csv.writerows(csv_rows(record))
        target.flush()

    def close(self) -> None:
        if self.fmt == "json" and self.path is not None:
            self._rewrite_json()
        if self.fmt == "json" and self.path is None and self.stream is not None:
            self.stream.write(json.dumps(self.records, indent=2, ensure_ascii=False) + "\n")
            self.stream.flush()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
