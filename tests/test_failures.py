"""Startup failure messages: the right advice for each kind of failure, with the figures; a
failure the hub downloader already explained is explained once; the memory probe's figures."""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sesame_server.config import Settings
from sesame_server.ops import advice, memory
from sesame_server.ops.load_errors import classify_load_error


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
    message = advice.model_load_failure(GatedRepoError("Access to model sesame/csm-1b is restricted"),
                                        model_id="sesame/csm-1b", hf_token_set=False)
    assert "https://huggingface.co/sesame/csm-1b" in message and "HF_TOKEN" in message
    assert "settings/tokens" in message


def test_refused_token_is_named():
    error = Exception("401 Client Error")
    error.response = SimpleNamespace(status_code=401)
    message = advice.model_load_failure(error, model_id="sesame/csm-1b", hf_token_set=True)
    assert "HF_TOKEN is set but was refused" in message


def test_unknown_repository_points_at_model_id():
    message = advice.model_load_failure(RepositoryNotFoundError("404"), model_id="mlx-community/csm-1c")
    assert "MODEL_ID" in message and "mlx-community/csm-1c" in message


def test_full_disk_shows_free_space(tmp_path):
    message = advice.model_load_failure(OSError(errno.ENOSPC, "No space left on device"),
                                        model_id="m/x", cache_dir=tmp_path / "not-yet")
    assert "Not enough disk space" in message and "GB free of" in message and "CACHE_DIR" in message


def test_network_failure_found_through_the_cause_chain():
    error = chained(RuntimeError("could not fetch weights"), ConnectionError("Max retries exceeded"))
    message = advice.model_load_failure(error, model_id="m/x")
    assert "could not be reached" in message and "MODEL_PATH" in message and "BACKEND=piper" in message


def test_unknown_failure_lists_all_three_checks():
    message = advice.describe_startup_failure(ValueError("weights missing"), Settings())
    assert "weights missing" in message
    assert "HF_TOKEN" in message and "disk" in message and "network" in message


@pytest.mark.parametrize("error", [
    MemoryError(),
    RuntimeError("[metal::malloc] Attempting to allocate 9663676416 bytes which is greater than the maximum"),
    OSError(errno.ENOMEM, "Cannot allocate memory"),
])
def test_out_of_memory_shows_memory_figures_and_advice(error):
    assert advice.is_out_of_memory(error)
    message = advice.describe_startup_failure(error)
    assert message.startswith("Out of memory")
    assert "total" in message and "available" in message and "peaked at" in message and "QUANTIZE=8" in message
    assert "needs about 8.0 GiB" in message


def test_missing_extra_gives_the_exact_command():
    message = advice.missing_dependency(ModuleNotFoundError("No module named 'mlx.core'", name="mlx.core"))
    assert "The CSM voice (MLX) needs the Python package 'mlx'" in message
    command = message.splitlines()[-1].strip()
    assert command.startswith(f"{sys.executable} -m pip install -e '")
    assert command.endswith("[csm]'")


def test_project_checkout_is_the_repository_root():
    assert advice.project_checkout() == Path(__file__).resolve().parent.parent


def test_missing_plain_package():
    assert advice.missing_dependency("lameenc").endswith(f"{sys.executable} -m pip install 'lameenc'")
    assert "[piper]" in advice.describe_startup_failure(ModuleNotFoundError("x", name="piper"))


# -- one classifier for the hub downloader and the advice ----------------------------------------
def _hub_error(name: str, message: str = "nope", status: int | None = None) -> Exception:
    """A real huggingface_hub error, built without an HTTP response."""
    from huggingface_hub import errors

    cls = getattr(errors, name)
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    if status is not None:
        error.response = SimpleNamespace(status_code=status)
    return error


def _fail_download(monkeypatch, failure: BaseException) -> None:
    """snapshot_download: nothing cached, then `failure` when asked to go online."""
    import huggingface_hub

    def fake(repo_id, **kwargs):
        if kwargs.get("local_files_only"):
            raise _hub_error("LocalEntryNotFoundError", "not cached")
        raise failure

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)


def _fetch_error(monkeypatch, failure: BaseException, token: str | None = None) -> BaseException:
    from sesame_server.backends.csm import hub

    _fail_download(monkeypatch, failure)
    with pytest.raises(hub.ModelFetchError) as info:
        hub.snapshot("sesame/csm-1b", hub.MODEL_PATTERNS, token, "the CSM model", required=("config.json",))
    return info.value


@pytest.mark.parametrize("failure, kind, hub_says", [
    (lambda: _hub_error("GatedRepoError"), "auth", "gated or private"),
    (lambda: _hub_error("HfHubHTTPError", "401 Client Error: Unauthorized", status=401), "auth", "gated or private"),
    (lambda: _hub_error("RepositoryNotFoundError"), "not_found", "not found"),
    (lambda: ConnectionError("Failed to resolve huggingface.co"), "network", "cannot be reached"),
    (lambda: OSError(errno.ENOSPC, "No space left on device"), "disk", "disk filled up"),
    (lambda: _hub_error("HfHubHTTPError", "500 Server Error", status=500), "other", "downloading sesame/csm-1b failed"),
])
def test_hub_and_advice_classify_alike(monkeypatch, failure, kind, hub_says):
    error = failure()
    assert classify_load_error(error) == kind
    assert hub_says in str(_fetch_error(monkeypatch, error))


def test_a_hub_failure_is_explained_once(monkeypatch):
    fetch_error = _fetch_error(monkeypatch, _hub_error("GatedRepoError", "Access to model sesame/csm-1b is restricted"))
    # The backend may wrap it while loading; the operator still reads hub.py's words, once.
    for raised in (fetch_error, chained(RuntimeError("loading the CSM model failed"), fetch_error)):
        message = advice.describe_startup_failure(raised, Settings(model_id="sesame/csm-1b"))
        assert message == str(fetch_error)
        assert message.count("HF_TOKEN") == 1 and "accept its license" not in message


def test_errors_outside_a_download_pass_through_the_hub_untouched(monkeypatch):
    error = ValueError("a bug, not a download failure")
    _fail_download(monkeypatch, error)
    from sesame_server.backends.csm import hub

    with pytest.raises(ValueError) as info:
        hub.snapshot("sesame/csm-1b", hub.MODEL_PATTERNS, None, "the CSM model", required=("config.json",))
    assert info.value is error


# -- the memory probe --------------------------------------------------------------------------------
def test_memory_probe_returns_plausible_bytes():
    rss, peak, virtual = memory.rss_bytes(), memory.peak_rss_bytes(), memory.virtual_bytes()
    total, available = memory.system_memory()
    for figure in (rss, peak, virtual, total, available):
        assert isinstance(figure, int)
    assert 10 * 2**20 < rss <= peak < total  # a Python with numpy and Flask loaded: tens of MiB at least
    assert rss <= virtual
    assert 0 < available <= total
    assert memory.format_bytes(3 * 2**30) == "3.0 GiB" and memory.format_bytes(5 * 2**20) == "5 MiB"
