"""The OpenAI dialect: POST /v1/audio/speech and the voice/model lists clients probe."""

from sesame_server.api.openai.routes import bp

__all__ = ["bp"]
