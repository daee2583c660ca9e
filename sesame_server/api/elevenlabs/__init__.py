"""The ElevenLabs dialect: text to speech (HTTP and WebSocket), voices (incl. cloning), account stubs."""

from sesame_server.api.elevenlabs.account import bp as account_bp
from sesame_server.api.elevenlabs.dialogue import bp as dialogue_bp
from sesame_server.api.elevenlabs.stream_input import bp as stream_input_bp
from sesame_server.api.elevenlabs.tts import bp as tts_bp
from sesame_server.api.elevenlabs.voices import bp as voices_bp

blueprints = (tts_bp, stream_input_bp, dialogue_bp, voices_bp, account_bp)

__all__ = ["blueprints"]
