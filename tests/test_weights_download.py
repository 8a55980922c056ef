"""Downloads against a real HTTP server on 127.0.0.1: progress, resume, errors, offline, two processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import pytest

from sifa_cli.errors import WeightsError
from sifa_cli.weights.cache import cache_path, file_sha256, partial_path, sifa_home
from sifa_cli.weights.download import fetch
from sifa_cli.weights.manifest import load_registry
from weights_http import FileServer, write_manifest

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    srv = FileServer(drop_after=100_000, slow_seconds=2.0).start()
    srv.files["model.bin"] = PAYLOAD
    yield srv
    srv.stop()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SIFA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SIFA_OFFLINE", raising=False)
    return tmp_path / "home"


def make_entry(tmp_path, monkeypatch, url, **fields):
    """Register one entry through a user manifest named by $SIFA_MANIFEST, as a team would."""
    raw = {"arch": "sifa_resnet_tiny", "file_name": "model.bin", "urls": [url], "sha256": PAYLOAD_SHA}
    raw.update(fields)
    manifest = write_manifest(tmp_path / "team.json", {"team_model": raw})
    monkeypatch.setenv("SIFA_MANIFEST", str(manifest))
    return load_registry().get("team_model")


def test_cache_root_follows_sifa_home(home):
    assert sifa_home() == home


def test_download_reports_progress_and_lands_verified(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("files", "model.bin"))
    seen = []
    path = fetch(entry, progress=lambda done, total: seen.append((done, total)))
    assert path == cache_path(entry) and path.read_bytes() == PAYLOAD
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert not partial_path(path).exists()
    # A second fetch uses the cache (no new request) and still checks the hash (via the sidecar).
    assert fetch(entry, progress=False) == path
    assert len(server.get_requests("/files/model.bin")) == 1


def test_rich_progress_bar_path_downloads_too(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("files", "model.bin"))
    assert fetch(entry, progress=True).read_bytes() == PAYLOAD


def test_dropped_connection_resumes_with_range(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("drop", "model.bin"))
    path = fetch(entry, progress=False)
    assert path.read_bytes() == PAYLOAD
    # First request got 100 000 bytes and was cut; the retry asked only for the rest.
    assert server.get_requests("/drop/model.bin") == [None, "bytes=100000-"]


def test_partial_file_from_an_earlier_run_is_resumed(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("files", "model.bin"))
    part = partial_path(cache_path(entry))
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:123_456])
    assert fetch(entry, progress=False).read_bytes() == PAYLOAD
    assert server.get_requests("/files/model.bin") == ["bytes=123456-"]


def test_server_without_range_support_restarts_cleanly(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("norange", "model.bin"))
    part = partial_path(cache_path(entry))
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:5000])
    assert fetch(entry, progress=False).read_bytes() == PAYLOAD  # not the 5000 bytes twice
    assert server.get_requests("/norange/model.bin") == ["bytes=5000-"]


def test_partial_file_longer_than_the_remote_one_is_discarded(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("files", "model.bin"))
    part = partial_path(cache_path(entry))
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (len(PAYLOAD) + 10))
    assert fetch(entry, progress=False).read_bytes() == PAYLOAD
    assert server.get_requests("/files/model.bin") == [f"bytes={len(PAYLOAD) + 10}-", None]  # 416, then afresh


def test_404_is_a_clear_error(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("files", "missing.bin"))
    with pytest.raises(WeightsError, match=r"could not download 'team_model': HTTP 404 .*missing\.bin"):
        fetch(entry, progress=False)
    assert not cache_path(entry).exists()


def test_second_url_is_tried_after_a_404(server, home, tmp_path, monkeypatch):
    entry = make_entry(
        tmp_path, monkeypatch, server.url("files", "missing.bin"),
        urls=[server.url("files", "missing.bin"), server.url("files", "model.bin")],
    )
    assert fetch(entry, progress=False).read_bytes() == PAYLOAD


def test_stalled_server_times_out(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("stall", "model.bin"))
    with pytest.raises(WeightsError, match=r"timed out: 127\.0\.0\.1:\d+ sent nothing for 0\.5 s"):
        fetch(entry, progress=False, timeout=0.5)
    assert not cache_path(entry).exists()


def test_hash_mismatch_leaves_nothing_in_the_cache(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("files", "model.bin"), sha256="0" * 64)
    with pytest.raises(WeightsError, match=r"is corrupt: sha256 is [0-9a-f]{64}, expected 0{64}; the file was removed"):
        fetch(entry, progress=False)
    folder = cache_path(entry).parent
    assert sorted(p.name for p in folder.iterdir()) == ["model.bin.lock"]


def test_prefix_only_entries_check_the_prefix(server, home, tmp_path, monkeypatch):
    good = make_entry(tmp_path, monkeypatch, server.url("files", "model.bin"), sha256=None,
                      sha256_prefix=PAYLOAD_SHA[:8])
    assert fetch(good, progress=False).read_bytes() == PAYLOAD
    bad_prefix = "0" * 8 if not PAYLOAD_SHA.startswith("0" * 8) else "1" * 8
    bad = make_entry(tmp_path, monkeypatch, server.url("files", "model.bin"), sha256=None, sha256_prefix=bad_prefix)
    with pytest.raises(WeightsError, match="expected it to start with"):
        fetch(bad, progress=False, force=True)


def test_corrupted_cached_file_is_caught_on_load_and_removed(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("files", "model.bin"))
    path = fetch(entry, progress=False)
    assert file_sha256(path) == PAYLOAD_SHA
    damaged = bytearray(PAYLOAD)
    damaged[1000] ^= 0xFF
    path.write_bytes(bytes(damaged))  # same size; the new mtime makes the sidecar stale
    with pytest.raises(WeightsError, match="does not match weights 'team_model'.*bad file was removed"):
        fetch(entry, progress=False)
    assert not path.exists()


def test_offline_mode_names_the_file_and_where_to_put_it(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("files", "model.bin"))
    monkeypatch.setenv("SIFA_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        fetch(entry, progress=False)
    message = str(info.value)
    assert "offline mode (SIFA_OFFLINE=1)" in message and "\n" not in message
    assert f"put it at {cache_path(entry)}" in message and server.url("files", "model.bin") in message
    assert server.get_requests("/files/model.bin") == []
    # Put there by hand, it is used (and verified) without any network.
    cache_path(entry).parent.mkdir(parents=True)
    cache_path(entry).write_bytes(PAYLOAD)
    assert fetch(entry, progress=False) == cache_path(entry)


def test_unreachable_host_is_treated_like_offline(home, tmp_path, monkeypatch):
    # A port nothing listens on: the connection is refused, as without a network.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    entry = make_entry(tmp_path, monkeypatch, f"http://127.0.0.1:{port}/files/model.bin")
    with pytest.raises(WeightsError, match=r"^no network \(cannot reach 127\.0\.0\.1:\d+: .*\): .*put it at "):
        fetch(entry, progress=False)


def test_two_processes_fetching_the_same_entry(server, home, tmp_path, monkeypatch):
    entry = make_entry(tmp_path, monkeypatch, server.url("slow", "model.bin"))
    script = textwrap.dedent(
        """
        from sifa_cli.weights.download import fetch
        from sifa_cli.weights.manifest import load_registry
        print(fetch(load_registry().get("team_model"), progress=False))
        """
    )
    env = dict(os.environ)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert {out.strip() for out, _ in outputs} == {str(cache_path(entry))}
    assert cache_path(entry).read_bytes() == PAYLOAD
    # The server was asked once: the second process waited on the lock and found the file ready.
    assert server.get_requests("/slow/model.bin") == [None]
    assert sum("waiting for another process" in err for _, err in outputs) == 1
