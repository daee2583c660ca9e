"""Getting files from the Hugging Face hub: cache first, then download, with clear errors.

Every fetch looks in the hub cache without touching the network first, so a cached model
starts offline. Downloads honour HF_TOKEN (passed in, never read from the environment
here), show huggingface_hub's progress bars and check free disk space up front.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sesame_server.backends.base import BackendError
from sesame_server.ops.advice import HF_TOKENS_URL
from sesame_server.ops.load_errors import ExplainedError, classify_load_error

log = logging.getLogger(__name__)

MODEL_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json"]
TOKENIZER_PATTERNS = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"]
MIMI_FILENAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
VOICE_REPO = "sesame/csm-1b"


class ModelFetchError(BackendError, ExplainedError):
    """A model file could not be found locally nor downloaded; the message says what to do."""


def snapshot(repo_id: str, patterns: list[str], token: str | None, what: str, required: tuple[str, ...]) -> Path:
    """A local snapshot of `repo_id` restricted to `patterns` (downloads what is missing).

    A cached snapshot is used as is when every glob in `required` matches a file in it.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, allow_patterns=patterns, token=token, local_files_only=True)
        if all(any(Path(path).glob(p)) for p in required):
            return Path(path)
    except LocalEntryNotFoundError:
        pass
    except Exception as exc:  # a corrupt cache must not stop a download attempt
        log.debug("cache lookup for %s failed: %s", repo_id, exc)
    log.info("Downloading %s (%s) from the Hugging Face hub", what, repo_id)
    with _translated_errors(repo_id, what, token):
        plan = snapshot_download(repo_id, allow_patterns=patterns, token=token, dry_run=True)
        _check_disk_space(sum((f.file_size or 0) for f in plan if f.will_download), what)
        return Path(snapshot_download(repo_id, allow_patterns=patterns, token=token))


def file(repo_id: str, filename: str, token: str | None, what: str) -> Path:
    """One file of `repo_id` (cache first)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename, token=token, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    log.info("Downloading %s (%s/%s) from the Hugging Face hub", what, repo_id, filename)
    with _translated_errors(repo_id, what, token):
        info = hf_hub_download(repo_id, filename, token=token, dry_run=True)
        if info.will_download:
            _check_disk_space(info.file_size or 0, what)
        return Path(hf_hub_download(repo_id, filename, token=token))


def cached(repo_id: str, filename: str) -> bool:
    """Whether `filename` of `repo_id` is in the hub cache (never touches the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # invalid repo id, unreadable cache: not cached
        return False


def cached_snapshot_has_weights(repo_id: str) -> bool:
    """config.json and at least one .safetensors of `repo_id` are cached (no network)."""
    if not cached(repo_id, "config.json"):
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        snapshot_dir = Path(try_to_load_from_cache(repo_id, "config.json")).parent
    except Exception:
        return False
    return any(snapshot_dir.glob("*.safetensors"))


def _check_disk_space(needed_bytes: int, what: str, where: Path | None = None) -> None:
    if needed_bytes <= 0:
        return
    from huggingface_hub import constants

    target = Path(where or constants.HF_HUB_CACHE)
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    margin = 256 * 1024 * 1024
    if free < needed_bytes + margin:
        raise ModelFetchError(
            f"Not enough disk space to download {what}: it needs {_gb(needed_bytes)} "
            f"(plus headroom) but only {_gb(free)} is free under {target}. Free some space or point "
            "HF_HOME / HF_HUB_CACHE at a larger disk."
        )


class _translated_errors:
    """Turn huggingface_hub / network / OS errors into one ModelFetchError with advice.

    The kind of failure comes from ops.load_errors, the classifier startup advice uses too;
    ModelFetchError is an ExplainedError, so that advice passes this message on as is.
    """

    def __init__(self, repo_id: str, what: str, token: str | None):
        self.repo_id, self.what, self.token = repo_id, what, token

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, ModelFetchError) or not isinstance(exc, Exception):
            return False
        message = self._message(exc)
        if message is None:
            return False
        raise ModelFetchError(message) from exc

    def _message(self, exc: Exception) -> str | None:
        repo, what = self.repo_id, self.what
        kind = classify_load_error(exc)
        if kind == "auth":
            page = f"https://huggingface.co/{repo}"
            if self.token:
                return (f"{what}: the repository {repo} is gated or private and refused the token in HF_TOKEN: "
                        f"check the token ({HF_TOKENS_URL}) and accept the terms at {page} with its account.")
            return (f"{what}: the repository {repo} is gated or private. Accept its terms at {page}, then set "
                    f"HF_TOKEN to a token of that account ({HF_TOKENS_URL}).")
        if kind == "not_found":
            return (f"{what}: repository {repo} not found (or private: set HF_TOKEN). "
                    "Check MODEL_ID / MIMI_ID / TOKENIZER_ID.")
        if kind == "network":
            return (f"{what}: {repo} is not in the local Hugging Face cache and the hub cannot be "
                    "reached (offline?). Download it once with network access (`sesame-tts download`), "
                    "or set MODEL_PATH to a local directory.")
        if kind == "disk":
            return f"{what}: the disk filled up while downloading {repo}. Free space and retry."
        from huggingface_hub import errors

        if isinstance(exc, errors.HfHubHTTPError):  # any other hub answer: say which download failed
            return f"{what}: downloading {repo} failed: {exc}"
        return None  # not a download failure: let it through untouched


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"
