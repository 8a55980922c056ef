"""sifa checkpoints (safetensors + metadata), load_model, and refusing pickles that run code."""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path

import pytest
import torch

from sifa_cli.errors import WeightsError
from sifa_cli.models import create_model
from sifa_cli.weights import cache
from sifa_cli.weights.checkpoint import (
    load_checkpoint,
    load_model,
    load_torch_state_dict,
    read_checkpoint_meta,
    save_checkpoint,
)
from sifa_cli.weights.convert import import_reference_checkpoint
from sifa_cli.weights.verify import inspect_file, verify
from weights_http import write_manifest

CATEGORIES = ["jump", "run", "wave"]
META = {
    "arch": "sifa_resnet_tiny",
    "arch_kwargs": {"clip_length": 16},
    "categories": CATEGORIES,
    "input": {"frames": 16, "step": 1, "sampling": "dense", "size": 64, "resize": 72},
    "source": "test",
    "license": "CC0",
}


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    model = create_model("sifa_resnet_tiny", num_classes=len(CATEGORIES), clip_length=16)
    with torch.no_grad():  # non-trivial values everywhere, including zero-initialised ones
        for param in model.parameters():
            param.normal_(0, 0.05)
    return model.eval()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SIFA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SIFA_MANIFEST", raising=False)
    return tmp_path / "home"


def outputs(model, clip):
    with torch.no_grad():
        return model(clip)


def test_round_trip_gives_identical_outputs(tmp_path, tiny_model, home):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, META)
    meta = read_checkpoint_meta(path)
    assert meta["format"] == "sifa-checkpoint/1" and meta["categories"] == CATEGORIES
    state, meta2 = load_checkpoint(path)
    assert meta2 == meta and state.keys() == tiny_model.state_dict().keys()
    model, meta3 = load_model(str(path), "cpu")
    clip = torch.randn(2, 3, 16, 64, 64)
    for ours, theirs in zip(outputs(model, clip), outputs(tiny_model, clip)):
        assert torch.equal(ours, theirs)
    assert not model.training and meta3["input"]["size"] == 64


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, META)
    before = path.read_bytes()
    bad_state = dict(tiny_model.state_dict(), oops="not a tensor")
    with pytest.raises(WeightsError, match="oops is a str, not a tensor"):
        save_checkpoint(path, bad_state, META)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"arch": ""}, "lacks the architecture name"),
        ({"categories": []}, "non-empty list of labels"),
        ({"input": [16]}, "\"input\" must be an object"),
    ],
)
def test_metadata_is_validated(tmp_path, tiny_model, change, message):
    with pytest.raises(WeightsError, match=message):
        save_checkpoint(tmp_path / "m.safetensors", tiny_model, {**META, **change})


def test_checkpoint_from_a_newer_sifa_is_refused_by_name(tmp_path, tiny_model):
    import json

    from safetensors.torch import save_file

    path = tmp_path / "future.safetensors"
    meta = {**META, "format": "sifa-checkpoint/2"}
    save_file({"w": torch.zeros(1)}, str(path), metadata={"sifa": json.dumps(meta)})
    with pytest.raises(WeightsError, match="format sifa-checkpoint/2 is newer than this sifa understands"):
        read_checkpoint_meta(path)


def test_safetensors_without_sifa_metadata_is_explained(tmp_path, tiny_model):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    with pytest.raises(WeightsError, match="has no sifa metadata; convert .* `sifa weights import`"):
        load_model(path)


def test_checkpoint_of_another_architecture_is_one_clear_line(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, {**META, "arch": "sifa_resnet_small"})
    with pytest.raises(WeightsError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message
    assert "does not fit sifa_resnet_small" in message and "looks like a sifa_resnet_tiny checkpoint" in message


def test_missing_file_and_unknown_name(home):
    with pytest.raises(WeightsError, match="weights file not found: nowhere/m.safetensors"):
        load_model("nowhere/m.safetensors")
    with pytest.raises(WeightsError, match="unknown weights name 'resnet50_in1k' \\(did you mean resnet50_in1k_tv"):
        load_model("resnet50_in1k")


def test_imagenet_init_entry_is_not_a_classifier(home):
    with pytest.raises(WeightsError, match="ImageNet initialisation for fine-tuning sifa_resnet50"):
        # Refused before any download: the entry's kind says what it is.
        load_model("resnet50_in1k_tv", progress=False)


def test_registry_entry_is_fetched_verified_and_loaded(tmp_path, tiny_model, home, monkeypatch):
    path = save_checkpoint(tmp_path / "shipped.safetensors", tiny_model, META)
    entry = {"arch": "sifa_resnet_tiny", "file_name": "shipped.safetensors", "path": "shipped.safetensors",
             "sha256": cache.sha256_file(path), "categories": CATEGORIES}
    manifest = write_manifest(tmp_path / "m.json", {"tiny_demo": entry}, default="tiny_demo")
    model, meta = load_model(None, manifests=[manifest])  # the manifest's default
    assert meta["categories"] == CATEGORIES
    # A damaged shipped file is refused (and, not being in the cache, left where it is).
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match weights 'tiny_demo': sha256 is"):
        load_model("tiny_demo", manifests=[manifest])
    assert path.exists()


def test_sha256_is_remembered_until_the_file_changes(tmp_path, monkeypatch, home):
    calls = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda p: calls.append(p) or real(p))
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    first = cache.file_sha256(path)
    assert cache.file_sha256(path) == first and len(calls) == 1
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert cache.file_sha256(path) != first and len(calls) == 2


# --- a pickle that runs code ---------------------------------------------------------------------


class _Payload:
    """Unpickling this creates the marker file: the attack the loaders must refuse."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture(params=["zip", "legacy"])
def malicious(request, tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    state = {"state_dict": {"conv1.weight": torch.zeros(1), "trap": _Payload(marker)}}
    if request.param == "zip":
        torch.save(state, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(state, handle, protocol=2)
    # The payload is live: an unsafe load really runs it (the legacy file then fails torch's format check).
    try:
        torch.load(path, weights_only=False)
    except Exception:
        pass
    assert marker.read_text() == "pwned"
    marker.unlink()
    return path, marker


def test_every_loader_refuses_a_malicious_pickle(malicious, tmp_path, home):
    path, marker = malicious
    loaders = [
        lambda: load_torch_state_dict(path),
        lambda: load_model(path),
        lambda: import_reference_checkpoint(path, "sifa_resnet_tiny", tmp_path / "out.safetensors"),
        lambda: inspect_file(path),
        lambda: verify(str(path)),
    ]
    for load in loaders:
        with pytest.raises(WeightsError) as info:
            load()
        assert "refusing to load" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_a_pickle_renamed_to_safetensors_is_refused_too(malicious, tmp_path):
    path, marker = malicious
    disguised = path.rename(tmp_path / "model.safetensors")
    with pytest.raises(WeightsError, match="refusing to load"):
        load_model(disguised)
    assert not marker.exists()


def test_damaged_pth_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(WeightsError, match=r"cannot read .*broken\.pth: it is neither a safetensors file nor a PyTorch"):
        load_torch_state_dict(path)
    # A real zip archive that torch cannot read as a checkpoint: torch's own reason is given.
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.pth", "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(WeightsError, match=r"cannot read .*other\.pth as a PyTorch checkpoint \("):
        load_torch_state_dict(tmp_path / "other.pth")


def test_payload_in_a_subprocess_cli_never_runs(malicious, tmp_path, home):
    import subprocess
    import sys

    path, marker = malicious
    script = textwrap.dedent(
        f"""
        from sifa_cli.cli.main import main
        import sys
        sys.argv = ["sifa", "weights", "import", {str(path)!r}, "--arch", "sifa_resnet_tiny",
                    "--out", {str(tmp_path / "o.safetensors")!r}]
        main()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "refusing to load" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_saved_checkpoints_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    from sifa_cli.models import create_model
    from sifa_cli.weights.checkpoint import save_checkpoint

    mask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.safetensors", create_model("sifa_resnet_tiny", num_classes=2),
                               {"arch": "sifa_resnet_tiny", "arch_kwargs": {}, "categories": ["a", "b"],
                                "input": {"frames": 8, "size": 64}})
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
