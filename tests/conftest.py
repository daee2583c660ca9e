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


@pytest.fixture(autouse=True)
def _remove_our_log_handlers():
    """A test that runs setup_logging (e.g. through sesame_server.cli.main) must not leave
    its handlers on the root logger for the tests after it."""
    yield
    from sesame_server.ops.logs import teardown_logging

    teardown_logging()
