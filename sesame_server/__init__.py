"""Sesame TTS server: a local, OpenAI- and ElevenLabs-compatible text-to-speech server."""

__version__ = "0.1.0"


def create_app(*args, **kwargs):
    """See sesame_server.app.create_app (imported lazily: the CLI starts faster)."""
    from sesame_server.app import create_app as _create_app

    return _create_app(*args, **kwargs)


def init_app(*args, **kwargs):
    """See sesame_server.app.init_app."""
    from sesame_server.app import init_app as _init_app

    return _init_app(*args, **kwargs)


__all__ = ["__version__", "create_app", "init_app"]
