"""`sesame-tts convert`: a whole model directory into transformers' layout and back, exactly;
a target that exists or a source that is not a model is refused, leaving nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sesame_server.cli import main  # noqa: E402
from tests.csm_tiny import tiny_model_dir  # noqa: E402


def _mlx_params(module) -> dict:
    from mlx.utils import tree_flatten

    return {name: np.array(value) for name, value in tree_flatten(module.parameters())}


def test_a_model_directory_converts_to_transformers_and_back_exactly(tmp_path, capsys):
    from transformers import CsmForConditionalGeneration

    from sesame_server.backends.csm.loading import load_csm
    from sesame_server.backends.csm.mimi_io import read_mlx_mimi

    env = str(tmp_path / "none.env")
    there, back = tmp_path / "transformers", tmp_path / "mlx"
    assert main(["--env-file", env, "convert", "--to", "transformers", str(tiny_model_dir()), str(there)]) == 0
    assert "BACKEND=csm-torch" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "tokenizer.json", "prompts/conversational_a.wav"):
        assert (there / name).is_file(), name
    model = CsmForConditionalGeneration.from_pretrained(there)  # transformers reads it as its own
    assert model.config.num_codebooks == 32 and model.codec_model.config.codebook_size == 64

    assert main(["--env-file", env, "convert", "--to", "mlx", str(there), str(back)]) == 0
    original, _ = load_csm(tiny_model_dir())
    returned, _ = load_csm(back)
    expected, got = _mlx_params(original), _mlx_params(returned)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    expected = _mlx_params(read_mlx_mimi(tiny_model_dir() / "mimi"))
    got = _mlx_params(read_mlx_mimi(back / "mimi"))
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert (back / "tokenizer" / "tokenizer.json").is_file() and (back / "prompts").is_dir()


def test_convert_never_overwrites_or_leaves_half_a_model(tmp_path, capsys):
    env = str(tmp_path / "none.env")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert main(["--env-file", env, "convert", "--to", "transformers", str(tiny_model_dir()), str(existing)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]

    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    assert main(["--env-file", env, "convert", "--to", "mlx", str(not_a_model), str(tmp_path / "out")]) == 1
    assert "not a CSM model" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "existing"]  # no staging directory left


def test_each_backend_says_which_layout_it_serves_and_auto_wants_cuda(tmp_path):
    from sesame_server.backends.registry import plugin
    from sesame_server.config import Settings
    from tests.csm_tiny import tiny_torch_model_dir

    torch_dir, mlx_dir = tiny_torch_model_dir(), tiny_model_dir()
    ok, why = plugin("csm").available(Settings(model_path=torch_dir, cache_dir=tmp_path))
    assert not ok and "BACKEND=csm-torch" in why
    ok, why = plugin("csm-torch").available(Settings(model_path=mlx_dir, cache_dir=tmp_path))
    assert not ok and "convert --to transformers" in why
    ok, why = plugin("csm-torch").available(Settings(model_path=torch_dir, cache_dir=tmp_path))
    assert ok, why
    ok, why = plugin("csm-torch").available(Settings(model_path=torch_dir, cache_dir=tmp_path), auto=True)
    assert ok == torch.cuda.is_available()
    if not ok:
        assert "no CUDA GPU" in why
