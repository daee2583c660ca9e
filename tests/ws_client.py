"""A plain `websockets` client speaking ElevenLabs' stream-input protocol, for the tests."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from websockets.sync.client import ClientConnection, connect

LIVEKIT_QUERY = ("model_id=eleven_turbo_v2_5&output_format={fmt}&enable_ssml_parsing=false&enable_logging=true"
                 "&inactivity_timeout=180&apply_text_normalization=auto&sync_alignment=true&auto_mode=true")
PIPECAT_QUERY = "model_id=eleven_flash_v2_5&output_format={fmt}&auto_mode=true"


def ws_url(http_url: str, voice: str, query: str = "", multi: bool = True) -> str:
    path = "multi-stream-input" if multi else "stream-input"
    return f"{http_url.replace('http://', 'ws://')}/v1/text-to-speech/{voice}/{path}" + (f"?{query}" if query else "")


def open_socket(url: str, **headers: str) -> ClientConnection:
    return connect(url, additional_headers=headers, open_timeout=30, max_size=None)


def send(ws: ClientConnection, **message) -> None:
    ws.send(json.dumps(message))


@dataclass
class Received:
    audio: dict[str | None, bytearray] = field(default_factory=dict)  # by contextId
    messages: list[dict] = field(default_factory=list)
    finals: list[str | None] = field(default_factory=list)  # contextIds, in the order isFinal came

    def chars(self, context_id: str | None = None) -> str:
        text = ""
        for message in self.messages:
            if message.get("contextId") == context_id and message.get("normalizedAlignment"):
                text += "".join(message["normalizedAlignment"]["chars"])
        return text


def read_until_final(ws: ClientConnection, context_ids: set[str | None], received: Received | None = None,
                     timeout: float = 60.0) -> Received:
    """Every message until each of `context_ids` sent isFinal (None: the single-context socket)."""
    received = received or Received()
    waiting = set(context_ids)
    while waiting:
        message = json.loads(ws.recv(timeout=timeout))
        received.messages.append(message)
        context_id = message.get("contextId")
        if message.get("audio"):
            received.audio.setdefault(context_id, bytearray()).extend(base64.b64decode(message["audio"]))
        if message.get("isFinal"):
            received.finals.append(context_id)
            waiting.discard(context_id)
        assert "error" not in message, message
    return received
