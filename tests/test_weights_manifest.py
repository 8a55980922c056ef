"""The weights manifest: the shipped entries, user manifests, and clear errors for bad ones."""

from __future__ import annotations

import json
import os
import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import pytest

from sifa_cli.errors import WeightsError
from sifa_cli.weights.manifest import KIND_INIT, load_registry, shipped_manifest_path
from weights_http import write_manifest

ENTRY = {"arch": "sifa_resnet_tiny", "file_name": "t.safetensors", "urls": ["https://example.org/t.safetensors"]}


@pytest.fixture(autouse=True)
def no_user_manifests(monkeypatch):
    monkeypatch.delenv("SIFA_MANIFEST", raising=False)


def test_shipped_manifest_is_found_through_the_package():
    assert shipped_manifest_path().is_file()
    assert load_registry().manifests[0] == shipped_manifest_path()


def test_imagenet_initialisations_are_consistent():
    from sifa_cli.models import list_models

    registry = load_registry()
    inits = [entry for entry in registry if entry.kind == KIND_INIT]
    assert {e.arch for e in inits} >= {"sifa_resnet50", "sifa_swin_s", "sifa_swin_b", "sifa_swin_l"}
    for entry in inits:
        assert entry.arch in list_models()
        assert entry.source and entry.license and entry.notes
        for url in entry.urls:
            parts = urlsplit(url)
            assert parts.scheme == "https" and PurePosixPath(parts.path).name == entry.file_name
        # torchvision names embed the hash prefix; the entry must check exactly that prefix.
        if "download.pytorch.org" in entry.urls[0]:
            embedded = re.fullmatch(r"[a-z0-9]+-([0-9a-f]{8})\.pth", entry.file_name).group(1)
            assert entry.sha256_prefix == embedded and entry.check == "sha256 prefix"
        # Whatever is not published is null, and the entry says in words how little is checked.
        if entry.sha256 is None and entry.sha256_prefix is None:
            assert entry.check == "none" and "no sha256" in entry.notes.lower()


def test_user_manifests_from_the_environment_and_options(tmp_path, monkeypatch):
    first = write_manifest(tmp_path / "a.json", {"team_a": ENTRY})
    second = write_manifest(tmp_path / "b.json", {"team_b": {**ENTRY, "path": "t.safetensors"}}, default="team_b")
    third = write_manifest(tmp_path / "c.json", {"team_c": ENTRY})
    monkeypatch.setenv("SIFA_MANIFEST", os.pathsep.join([str(first), str(second)]))
    registry = load_registry([third, first])  # a repeated manifest is read once
    assert {"team_a", "team_b", "team_c", "resnet50_in1k_tv"} <= set(registry.entries)
    assert registry.default == "team_b" and registry.default_entry().local_path == tmp_path / "t.safetensors"
    assert registry.get("team_a").manifest == first


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"x": {**ENTRY, "sha265": "ab"}}, r"entry 'x': unknown field sha265"),
        ({"x": {"arch": "a", "urls": []}}, r"missing field file_name"),
        ({"x": {**ENTRY, "urls": []}}, "give urls to download from, or a path beside the manifest"),
        ({"x": {**ENTRY, "sha256": "abc"}}, "sha256 must be 64 hex digits or null"),
        ({"x": {**ENTRY, "file_name": "../../.bashrc"}}, "file_name must be a bare file name"),
        ({"../escape": ENTRY}, "names may use only letters"),
        ({"x": {**ENTRY, "kind": "video"}}, "kind must be one of classifier, init"),
        ({"resnet50_in1k_tv": ENTRY}, "'resnet50_in1k_tv' is declared twice"),
    ],
)
def test_bad_entries_are_named_in_one_line(tmp_path, entries, message):
    manifest = write_manifest(tmp_path / "bad.json", entries)
    with pytest.raises(WeightsError, match=message) as info:
        load_registry([manifest])
    assert "\n" not in str(info.value) and str(manifest) in str(info.value)


def test_bad_manifest_files(tmp_path):
    with pytest.raises(WeightsError, match="manifest not found"):
        load_registry([tmp_path / "missing.json"])
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "sifa-manifest/1", "weights": {')
    with pytest.raises(WeightsError, match=r"is not valid JSON: line 1"):
        load_registry([broken])
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"weights": {}}))
    with pytest.raises(WeightsError, match='"format": "sifa-manifest/1"'):
        load_registry([wrong])
    dangling = write_manifest(tmp_path / "d.json", {"x": ENTRY}, default="y")
    with pytest.raises(WeightsError, match="the default weights 'y' have no entry"):
        load_registry([dangling])
