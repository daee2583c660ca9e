from __future__ import annotations

import pytest

from sesame_server.config import Settings


def piper_settings(tmp_path, **changes) -> Settings:
    return Settings(backend="piper", cache_dir=tmp_path, warmup_on_start=True, threads=8).replace(**changes)


@pytest.fixture(scope="session")
def piper_server(tmp_path_factory):
    """The real server with the embedded Piper voice, shared by the end-to-end tests."""
    from tests.live import live_server

    with live_server(piper_settings(tmp_path_factory.mktemp("cache"))) as server:
        yield server
