"""Watch what the SIFA blocks of a model do on a clip: where each place finds its match in the next frame
(arrows), where the attention lands (heat-map), and the numbers behind them.

One module a step: `capture` (hooks on the SIFA blocks), `clip` (decoding the clip as the model sees it),
`motion` (displacements and the motion they measure, per block and feature step), `render` (panels,
layout, contact sheet), `write` (video, PNG, JSON), `run` (the command's work, start to end).

Capture. Forward hooks on the chosen blocks' `sifa` modules record the offsets (N,2K²,T,H,W) and the
correlation weights (N,K²,T,H,W) the model computes while it classifies the clip; the model's math is
untouched, and the same forward pass gives the predicted label.

Time. Tap k of feature frame t samples frame t around a location of frame t-1, the query. The stem makes
one feature frame out of every T/F clip frames (SIFA-Net and SIFA-Transformer: 4 frames; SIFA-Net's dual
path pools 2 more, so 8). The step from feature frame f-1 to f is drawn on the clip frames that make up
f: arrows start on the regular grid (query locations of f-1) and end where the samples are taken in f,
which is the picture underneath. The clip frames of feature frame 0 have no earlier feature frame and are
shown plain with a note. (The model also runs a step at t = 0 whose query is frame 0 itself; SIFA throws
its result away, so it is not shown.) The video has one frame per clip frame and plays at the rate of
the clip's sampling: source fps / step for dense sampling, so the clip lasts as long as it does in the
source.

Space. Panels show the model's view, the centre crop it classifies, at display resolution. A feature
pixel of a block with stride S sits at model pixel S*j in SIFA-Net (strided convolutions with "same"
padding keep the top-left corner) and at the centre of its S*S patch in SIFA-Transformer (patches and
merges tile the image).
"""

from sifa_cli.visualize.capture import BlockCapture, BlockInfo, capture_sifa, describe_blocks, select_blocks
from sifa_cli.visualize.clip import PreparedClip, parse_point, point_in_panel, prepare_clip
from sifa_cli.visualize.motion import (ClipScale, LabelledClip, MotionReport, arrow_field, block_motion, displacement,
                                      mean_displacement, mean_shift, measure_motion, relative_to_mean, window_shift)
from sifa_cli.visualize.render import (
    CAPTION_HEIGHT, GAP, HEADER_HEIGHT, HEAT_COLOURMAP, MAX_HEIGHT, MAX_WIDTH, OUTSIDE_CROP, HeatScale, Layout,
    PanelGeometry, attention_landing, choose_layout, contact_sheet, feature_frame_of, fit_text, plan_point_view,
    put_text, render_attention, render_point, sheet_frames,
)
from sifa_cli.visualize.motion import ARROW_MODES
from sifa_cli.visualize.run import DEFAULT_VIEWS, VIEWS, Rendering, VisualizeReport, render_visualization, visualize
from sifa_cli.visualize.write import JSON_SUFFIX, SHEET_SUFFIX, VIDEO_SUFFIX, check_output_path, write_sheet, write_video
