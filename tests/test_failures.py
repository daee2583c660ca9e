"""Startup failure messages: the right advice for each kind of failure, with the figures."""

from __future__ import annotations

import errno
import sys
from types import SimpleNamespace

import pytest

from sesame_server import failures
from sesame_server.config import Settings


class GatedRepoError(Exception):
    """Stands in for huggingface_hub's (matched by class name, so no hub import is needed)."""


class RepositoryNotFoundError(Exception):
    pass


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


def test_gated_model_asks_for_a_token():
    message = failures.model_load_failure(GatedRepoError("Access to model sesame/csm-1b is restricted"),
                                          model_id="sesame/csm-1b", hf_token_set=False)
    assert "https://huggingface.co/sesame/csm-1b" in message and "HF_TOKEN" in message
    assert "settings/tokens" in message


def test_refused_token_is_named():
    error = Exception("401 Client Error")
    error.response = SimpleNamespace(status_code=401)
    message = failures.model_load_failure(error, model_id="sesame/csm-1b", hf_token_set=True)
    assert "HF_TOKEN is set but was refused" in message


def test_unknown_repository_points_at_model_id():
    message = failures.model_load_failure(RepositoryNotFoundError("404"), model_id="mlx-community/csm-1c")
    assert "MODEL_ID" in message and "mlx-community/csm-1c" in message


def test_full_disk_shows_free_space(tmp_path):
    message = failures.model_load_failure(OSError(errno.ENOSPC, "No space left on device"),
                                          model_id="m/x", cache_dir=tmp_path / "not-yet")
    assert "Not enough disk space" in message and "GB free of" in message and "CACHE_DIR" in message


def test_network_failure_found_through_the_cause_chain():
    error = chained(RuntimeError("could not fetch weights"), ConnectionError("Max retries exceeded"))
    message = failures.model_load_failure(error, model_id="m/x")
    assert "could not be reached" in message and "MODEL_PATH" in message and "BACKEND=piper" in message


def test_unknown_failure_lists_all_three_checks():
    message = failures.describe_startup_failure(ValueError("weights missing"), Settings())
    assert "weights missing" in message
    assert "HF_TOKEN" in message and "disk" in message and "network" in message


@pytest.mark.parametrize("error", [
    MemoryError(),
    RuntimeError("[metal::malloc] Attempting to allocate 9663676416 bytes which is greater than the maximum"),
    OSError(errno.ENOMEM, "Cannot allocate memory"),
])
def test_out_of_memory_shows_memory_figures_and_advice(error):
    assert failures.is_out_of_memory(error)
    message = failures.describe_startup_failure(error)
    assert message.startswith("Out of memory")
    assert "total" in message and "QUANTIZE=8" in message


def test_missing_extra_gives_the_exact_command():
    message = failures.missing_dependency(ModuleNotFoundError("No module named 'mlx.core'", name="mlx.core"))
    assert "The CSM voice (MLX) needs the Python package 'mlx'" in message
    command = message.splitlines()[-1].strip()
    assert command.startswith(f"{sys.executable} -m pip install -e '")
    assert command.endswith("[csm]'")


def test_missing_plain_package():
    assert failures.missing_dependency("lameenc").endswith(f"{sys.executable} -m pip install 'lameenc'")
    assert "[piper]" in failures.describe_startup_failure(ModuleNotFoundError("x", name="piper"))
