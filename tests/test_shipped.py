"""The shipped default model and example clip: what the README's first command runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sifa_cli.models import create_model
from sifa_cli.weights.checkpoint import read_checkpoint_meta
from sifa_cli.weights.manifest import load_registry

ROOT = Path(__file__).resolve().parents[1]


def test_default_entry_meta_matches_the_file_and_the_model():
    registry = load_registry()
    entry = registry.entries[registry.default]
    meta = read_checkpoint_meta(entry.local_path)
    assert meta["categories"] == list(entry.categories) and meta["input"]["frames"] == 16
    model = create_model(entry.arch, num_classes=len(entry.categories), **meta["arch_kwargs"])
    assert entry.num_params == sum(p.numel() for p in model.parameters())
    assert entry.local_path.stat().st_size == entry.size < 20 * 2**20


def test_readme_command_predicts_the_example_clip():
    result = subprocess.run([sys.executable, "-m", "sifa_cli.cli.main", "predict", str(ROOT / "examples" / "clip.mp4"),
                             "--format", "json", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["top"][0]["label"] == "moving left" and record["top"][0]["score"] > 0.5
