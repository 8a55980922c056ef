"""The HTML report of a timeline (`sifa predict VIDEO --timeline -o report.html`): one page that
opens offline, every image inside it (JPEG as data: URLs).

It shows the strip of segments over the whole video (one colour per class, uncertain ones
hatched, cuts as dark lines), a table of segments with the first, middle and last frame of each,
their timecode, score and runner-up, and for the uncertain parts which labels the model hesitated
between, in frames.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict

import numpy as np

from sifa_cli.data.decode import Video
from sifa_cli.engine.timeline_export import TimelineDoc, segment_text
from sifa_cli.engine.timecode import format_rate

CSS_COLOURS = {"RED": "#d64545", "GREEN": "#3c9d4f", "BLUE": "#3f6fd1", "YELLOW": "#d8b52b", "CYAN": "#2bb3c0",
               "MAGENTA": "#b548b5", "ORANGE": "#e0822e", "PURPLE": "#7650b8", "PINK": "#e07aa8",
               "WHITE": "#bbbbbb", "BLACK": "#444444"}
THUMB_HEIGHT = 72
MAX_THUMB_SEGMENTS = 400  # beyond this many segments, only the first ones get pictures (page size)

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.meta { color: #555; margin-bottom: 16px; }
.strip { display: flex; height: 34px; border: 1px solid #999; background: #fff; }
.strip div { height: 100%; box-sizing: border-box; border-right: 1px solid rgba(255,255,255,.6); }
.strip div.cut { border-left: 3px solid #111; }
.uncertain { background-image: repeating-linear-gradient(45deg, rgba(255,255,255,.55) 0 4px, transparent 4px 9px); }
.legend span { display: inline-block; margin: 6px 14px 0 0; } .chip { display: inline-block; width: 12px;
  height: 12px; border-radius: 2px; vertical-align: -1px; margin-right: 4px; }
table { border-collapse: collapse; background: #fff; } td, th { border: 1px solid #ddd; padding: 4px 8px;
  vertical-align: middle; text-align: left; } th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tr.flag td { background: #fff4e0; }
img { height: THUMBpx; margin-right: 3px; border-radius: 2px; } td.pics { white-space: nowrap; }
.bar { display: inline-block; height: 10px; background: #777; vertical-align: middle; margin-left: 6px; }
""".replace("THUMB", str(THUMB_HEIGHT))


def _thumbnails(doc: TimelineDoc) -> dict[int, list[str]]:
    """JPEG data URLs of the first, middle and last frame of each segment (by segment index)."""
    import cv2

    wanted: dict[int, list[int]] = {}
    for number, segment in enumerate(doc.segments[:MAX_THUMB_SEGMENTS]):
        last = segment.end_frame - 1
        wanted[number] = sorted({segment.start_frame, (segment.start_frame + last) // 2, last})
    frames = sorted({f for picks in wanted.values() for f in picks})
    images: dict[int, str] = {}
    if frames:
        with Video(doc.media, short_side=THUMB_HEIGHT) as video:
            frames = [f for f in frames if f < video.num_frames]
            for chunk in range(0, len(frames), 64):
                batch = frames[chunk:chunk + 64]
                for index, frame in zip(batch, video.read(np.asarray(batch))):
                    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 80])
                    if ok:
                        images[index] = "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")
    return {number: [images[f] for f in picks if f in images] for number, picks in wanted.items()}


def html_report(doc: TimelineDoc) -> str:
    e = html.escape
    thumbs = _thumbnails(doc)
    total = max(1, doc.frames)
    uncertain = [s for s in doc.segments if s.uncertain]
    shots = len({s.shot for s in doc.segments if s.shot is not None})
    rate = format_rate(doc.rate.rate)
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(doc.media.name)} · sifa timeline"
           f"</title><style>{_STYLE}</style></head><body>",
           f"<h1>{e(doc.media.name)}</h1>",
           f"<div class='meta'>{doc.frames} frames at {rate} fps"
           f"{' drop-frame' if doc.rate.drop_frame else ''}, {doc.timecode(0)} to {doc.timecode(doc.frames)} · "
           f"{len(doc.segments)} segments" + (f" in {shots} shots" if shots else "") +
           f" · {len(uncertain)} uncertain</div>", "<div class='strip'>"]
    previous_shot = None
    for segment in doc.segments:
        width = 100.0 * (segment.end_frame - segment.start_frame) / total
        classes = (["uncertain"] if segment.uncertain else []) + (
            ["cut"] if previous_shot is not None and segment.shot != previous_shot else [])
        previous_shot = segment.shot
        out.append(f"<div class='{' '.join(classes)}' style='width:{width:.4f}%;background-color:"
                   f"{CSS_COLOURS[doc.colour(segment.label)]}' title='{e(doc.timecode(segment.start_frame))} "
                   f"{e(segment_text(segment))}'></div>")
    out.append("</div><div class='legend'>")
    for label in doc.categories:
        out.append(f"<span><span class='chip' style='background:{CSS_COLOURS[doc.colour(label)]}'></span>{e(label)}</span>")
    out.append("<span><span class='chip uncertain' style='background-color:#888'></span>uncertain</span>"
               "<span><span class='chip' style='background:#111;width:3px'></span>cut</span></div>")

    out.append("<h2>Segments</h2><table><tr><th>#</th><th>shot</th><th>in</th><th>out</th><th>frames</th>"
               "<th>label</th><th>score</th><th>runner-up</th><th>frames: first, middle, last</th></tr>")
    for number, segment in enumerate(doc.segments):
        runner = f"{e(segment.runner_up[0])} {segment.runner_up[1]:.2f}" if segment.runner_up else ""
        images = "".join(f"<img src='{src}' alt='frame'>" for src in thumbs.get(number, []))
        out.append(
            f"<tr class='{'flag' if segment.uncertain else ''}'><td class='num'>{number + 1}</td>"
            f"<td class='num'>{'' if segment.shot is None else segment.shot}</td>"
            f"<td>{e(doc.timecode(segment.start_frame))}</td><td>{e(doc.timecode(segment.end_frame))}</td>"
            f"<td class='num'>{segment.end_frame - segment.start_frame}</td>"
            f"<td><span class='chip' style='background:{CSS_COLOURS[doc.colour(segment.label)]}'></span>"
            f"<b>{e(segment.label)}</b>{' <i>uncertain</i>' if segment.uncertain else ''}</td>"
            f"<td class='num'>{segment.score:.3f}<span class='bar' style='width:{60 * segment.score:.0f}px'></span></td>"
            f"<td>{runner}</td><td class='pics'>{images}</td></tr>")
    out.append("</table>")

    out.append("<h2>Uncertain parts</h2>")
    if not uncertain:
        out.append("<p>None: every segment's label scored clearly above the rest.</p>")
    else:
        pairs: dict[tuple[str, str], int] = defaultdict(int)
        for segment in uncertain:
            pairs[(segment.label, segment.runner_up[0] if segment.runner_up else "-")] += segment.end_frame - segment.start_frame
        out.append("<p>Frames of uncertain segments by the label given and the runner-up it was close to:</p>"
                   "<table><tr><th>label</th><th>runner-up</th><th>frames</th><th>share of the video</th></tr>")
        for (label, runner), frames in sorted(pairs.items(), key=lambda item: -item[1]):
            out.append(f"<tr><td>{e(label)}</td><td>{e(runner)}</td><td class='num'>{frames}</td>"
                       f"<td class='num'>{100 * frames / total:.1f} %</td></tr>")
        out.append("</table>")
    if len(doc.segments) > MAX_THUMB_SEGMENTS:
        out.append(f"<p>Pictures are shown for the first {MAX_THUMB_SEGMENTS} segments only.</p>")
    out.append("</body></html>\n")
    return "".join(out)
