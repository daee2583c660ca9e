"""Loading CSM, tokenizer and Mimi from local directories; hub failures become clear errors."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from sesame_server.backends.base import BackendError
from sesame_server.backends.csm import hub, loading
from sesame_server.config import Settings
from tests.csm_tiny import tiny_model_dir, tiny_settings


def test_loads_every_piece_from_the_tiny_directory(tmp_path):
    settings = tiny_settings(tmp_path)
    assets = loading.load_assets(settings)
    assert assets.model.args.audio_num_codebooks == 32
    assert assets.model_id == str(tiny_model_dir())
    ids = assets.tokenizer.encode("[0]Hello")
    assert ids[0] == assets.tokenizer.bos_token_id and ids[-1] == assets.tokenizer.eos_token_id
    assert assets.mimi.cfg.quantizer_nq == 32
    codes = assets.mimi.encode(__import__("mlx.core").core.zeros((1, 1, 1920 * 2)))
    assert codes.shape == (1, 32, 2)


def test_tokenizer_and_mimi_accept_separate_local_paths(tmp_path):
    tokenizer = loading.load_tokenizer(tiny_model_dir() / "tokenizer")
    assert len(tokenizer.encode("[1]Hi there")) > 3
    mimi = loading.load_mimi(tiny_model_dir() / "mimi")
    assert mimi.cfg.quantizer_bins == 64


def test_model_path_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="MODEL_PATH"):
        loading.model_dir(tiny_settings(tmp_path, model_path=tmp_path))


def test_missing_weights_are_named(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir(), broken)
    import mlx.core as mx

    weights = mx.load(str(broken / "model.safetensors"))
    weights.pop("codebook0_head.weight")
    mx.save_safetensors(str(broken / "model.safetensors"), weights)
    with pytest.raises(BackendError, match="codebook0_head"):
        loading.load_csm(broken)


def _hub_error(cls, message="nope"):
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


def _offline_then(monkeypatch, failure):
    """snapshot_download: nothing cached, then `failure` when asked to go online."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def fake(repo_id, **kwargs):
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        if callable(failure):
            return failure(**kwargs)
        raise failure

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)


def test_gated_repo_without_token_says_set_hf_token(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    _offline_then(monkeypatch, _hub_error(GatedRepoError))
    with pytest.raises(hub.ModelFetchError, match="gated.*HF_TOKEN"):
        hub.snapshot("sesame/csm-1b", hub.MODEL_PATTERNS, None, "the CSM model", required=("config.json",))


def test_no_network_says_offline(monkeypatch):
    _offline_then(monkeypatch, ConnectionError("Failed to resolve huggingface.co"))
    with pytest.raises(hub.ModelFetchError, match="cannot be reached"):
        hub.snapshot("mlx-community/csm-1b", hub.MODEL_PATTERNS, None, "the CSM model", required=("config.json",))


def test_not_enough_disk_space_says_how_much(monkeypatch, tmp_path):
    plan = [SimpleNamespace(file_size=4 * 10**15, will_download=True, filename="model.safetensors")]

    def dry_run_only(**kwargs):
        assert kwargs.get("dry_run"), "must check space before downloading"
        return plan

    _offline_then(monkeypatch, dry_run_only)
    with pytest.raises(hub.ModelFetchError, match=r"needs 4000000\.0 GB"):
        hub.snapshot("mlx-community/csm-1b", hub.MODEL_PATTERNS, "hf_x", "the CSM model", required=("config.json",))


def test_cached_snapshot_is_used_without_network(monkeypatch, tmp_path):
    import huggingface_hub

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    calls = []

    def fake(repo_id, **kwargs):
        calls.append(kwargs)
        assert kwargs.get("local_files_only"), "a cached model must not touch the network"
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    path = hub.snapshot("mlx-community/csm-1b", hub.MODEL_PATTERNS, None, "the CSM model",
                        required=("config.json", "*.safetensors"))
    assert path == tmp_path and len(calls) == 1


def test_random_prompt_is_speech_like_noise():
    from sesame_server.backends.csm.random_weights import random_voice_prompt

    audio = random_voice_prompt(1.0, seed=3)
    assert audio.dtype == np.float32 and len(audio) % 1920 == 0 and abs(len(audio) - 24_000) <= 1920
    assert 0.01 < float(np.sqrt(np.mean(audio ** 2))) < 0.5


def _fake_hub_cache(root, repo_id: str, source) -> None:
    """The hub cache layout (refs/main -> snapshots/<rev>/) holding `source`'s model files."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, snapshot / name)


@pytest.mark.parametrize("system, machine, cached, expected", [
    ("Darwin", "arm64", True, "csm"),     # Apple Silicon with the weights in the hub cache
    ("Darwin", "arm64", False, "piper"),  # no weights yet: speak with the embedded voice
    ("Linux", "x86_64", True, "piper"),   # CSM on a CPU is far slower than real time
])
def test_backend_auto_picks_csm_on_apple_silicon_with_weights(tmp_path, monkeypatch, system, machine, cached,
                                                              expected):
    import platform

    import huggingface_hub.constants

    from sesame_server.backends.selection import create_backend

    assert (tiny_model_dir() / "model.safetensors").is_file()
    if cached:
        _fake_hub_cache(tmp_path / "hub", "mlx-community/csm-1b", tiny_model_dir())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    settings = Settings(backend="auto", cache_dir=tmp_path, mimi_id=str(tiny_model_dir() / "mimi"),
                        tokenizer_id=str(tiny_model_dir() / "tokenizer"))
    assert create_backend(settings).info.name == expected


def test_backend_auto_takes_csm_anywhere_with_a_model_path(tmp_path, monkeypatch):
    import platform

    from sesame_server.backends import registry
    from sesame_server.backends.selection import create_backend

    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert create_backend(tiny_settings(tmp_path, backend="auto")).info.name == "csm"
    ok, reason = registry.plugin("csm").available(tiny_settings(tmp_path, model_path=None, model_id="nobody/none"),
                                                  auto=True)
    # auto would not use downloaded weights on Linux: it says so, and does not send the user to download
    assert not ok and "not Apple Silicon" in reason and "download" not in reason
    ok, reason = registry.plugin("csm").available(tiny_settings(tmp_path, model_path=None, model_id="nobody/none"),
                                                  auto=False)  # BACKEND=csm: now what is missing matters
    assert not ok and "nobody/none" in reason and "sesame-tts download" in reason


def test_mimi_configs_round_trip_through_json():
    import json

    from sesame_server.backends.csm.mimi_io import mimi_config_from_dict, mimi_config_to_dict
    from sesame_server.backends.csm.random_config import mimi_config

    cfg = mimi_config("small")
    assert mimi_config_from_dict(json.loads(json.dumps(mimi_config_to_dict(cfg)))) == cfg
