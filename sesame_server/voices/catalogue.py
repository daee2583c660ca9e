"""Which local voice a request means: local ids, OpenAI's built-in names, the default."""

from __future__ import annotations

import logging
import re
from typing import Protocol

from sesame_server.backends.base import Voice

log = logging.getLogger(__name__)

# OpenAI's built-in voices, mapped by character to the closest Sesame voice.
# conversational_a is the female prompt, conversational_b the male one.
OPENAI_VOICES: dict[str, str] = {
    "alloy": "conversational_a",
    "coral": "conversational_a",
    "marin": "conversational_a",
    "nova": "conversational_a",
    "sage": "conversational_a",
    "shimmer": "conversational_a",
    "ash": "conversational_b",
    "ballad": "conversational_b",
    "cedar": "conversational_b",
    "echo": "conversational_b",
    "fable": "conversational_b",
    "onyx": "conversational_b",
    "verse": "conversational_b",
}


# The built-in voices of every backend (csm's two prompts, piper's embedded voice), by their
# local and ElevenLabs-side ids: a configuration written for one backend works on another,
# mapped to that backend's own voice of the same name or its default.
PORTABLE_VOICES: dict[str, str] = {
    "conversational_a": "conversational_a", "conversationala": "conversational_a",
    "conversational_b": "conversational_b", "conversationalb": "conversational_b",
    "joe": "joe", "joeembeddedpiper": "joe",
}

# OpenClaw (and ElevenLabs itself) only accept voice ids of 10-40 letters and digits.
ELEVENLABS_ID = re.compile(r"^[A-Za-z0-9]{10,40}$")


def elevenlabs_id(voice: Voice) -> str:
    """The ElevenLabs-side id of a local voice: its id without separators, padded to 10."""
    if voice.elevenlabs_id:
        return voice.elevenlabs_id
    if ELEVENLABS_ID.match(voice.id):
        return voice.id
    letters = re.sub(r"[^A-Za-z0-9]", "", voice.id)[:40]
    return letters + "0" * (10 - len(letters)) if len(letters) < 10 else letters


class VoiceNotFound(LookupError):
    def __init__(self, name: str, available: list[str]):
        self.name = name
        self.available = available
        super().__init__(
            f"Voice '{name}' not found. Available voices: {', '.join(available)}"
            f" (OpenAI voice names {', '.join(sorted(OPENAI_VOICES))} are accepted too)."
        )


class VoiceUnusable(LookupError):
    """A stored voice exists but cannot be used (unreadable files); the message says why."""

    def __init__(self, voice_id: str, reason: str):
        self.voice_id = voice_id
        self.reason = reason
        super().__init__(f"Voice '{voice_id}' is stored but cannot be used: {reason}. Delete it "
                         f"(DELETE /v1/voices/{voice_id}) and add it again.")


class VoicesOnDisk(Protocol):
    """What keeps the cloned voices in step with a VOICES_DIR other nodes write (voices/shared.py)."""

    def rescan_if_due(self) -> None: ...

    def look_for(self, voice_id: str) -> bool: ...

    def still_there(self, voice_id: str) -> bool: ...


class VoiceCatalogue:
    """The voices a backend offers, and how any name a client sends resolves to one."""

    def __init__(self, voices: list[Voice], default_voice: str):
        if not voices:
            raise ValueError("a backend must offer at least one voice")
        self._voices = {voice.id: voice for voice in voices}
        self._lower = {voice.id.lower(): voice for voice in voices}
        self._by_elevenlabs_id = {elevenlabs_id(voice): voice for voice in voices}
        self.unusable: dict[str, str] = {}  # stored voice id -> why it cannot be used
        self._disk: VoicesOnDisk | None = None
        if default_voice in self._voices:
            self.default = self._voices[default_voice]
        else:
            self.default = voices[0]
            log.info("Default voice %r is not offered by this backend; using %r", default_voice, self.default.id)

    def follow(self, disk: VoicesOnDisk) -> None:
        """From now on, ask `disk` about cloned voices other nodes may have added or deleted."""
        self._disk = disk

    def __iter__(self):
        self._rescan_if_due()
        return iter(list(self._voices.values()))  # a copy: a rescan may add to it meanwhile

    def __len__(self) -> int:
        self._rescan_if_due()
        return len(self._voices)

    @property
    def ids(self) -> list[str]:
        self._rescan_if_due()
        return list(self._voices)

    def cloned_ids(self) -> set[str]:
        """The cloned voices known now (no rescan)."""
        return {voice.id for voice in list(self._voices.values()) if voice.category == "cloned"}

    def get(self, voice_id: str) -> Voice | None:
        """A voice by local id (any case) or by its ElevenLabs-side id. A cloned voice is
        looked for on disk when unknown here, and dropped when its folder is gone."""
        self._rescan_if_due()
        voice = self.get_known(voice_id)
        if self._disk is None:
            return voice
        if voice is None:
            if voice_id in self.unusable:  # known to be broken: not read again per request
                return None
            return self.get_known(voice_id) if self._disk.look_for(voice_id) else None
        if voice.category == "cloned" and not self._disk.still_there(voice.id):
            return None  # deleted on another node
        return voice

    def get_known(self, voice_id: str) -> Voice | None:
        """get() from what this node knows, without looking at the disk."""
        return (self._voices.get(voice_id) or self._by_elevenlabs_id.get(voice_id)
                or self._lower.get(voice_id.lower()))

    def _rescan_if_due(self) -> None:
        if self._disk is not None:
            self._disk.rescan_if_due()

    def resolve(self, name: str) -> Voice:
        """A local voice for `name`: a local id, else an OpenAI built-in name or another
        backend's built-in voice (mapped); else VoiceNotFound (VoiceUnusable for a stored
        voice that cannot be read)."""
        voice = self.get(name)
        if voice is not None:
            return voice
        if name in self.unusable:
            raise VoiceUnusable(name, self.unusable[name])
        mapped = OPENAI_VOICES.get(name.lower()) or PORTABLE_VOICES.get(name.lower())
        if mapped is None:
            raise VoiceNotFound(name, self.ids)
        voice = self._voices.get(mapped)
        if voice is None:  # not on this backend (piper has one voice): its default, said once per request
            voice = self.default
            log.info("Voice %s is not offered by this backend; using %s", name, voice.id)
        return voice

    def add(self, voice: Voice) -> None:
        self._voices[voice.id] = voice
        self._lower[voice.id.lower()] = voice
        self._by_elevenlabs_id[elevenlabs_id(voice)] = voice

    def mark_unusable(self, voice_id: str, reason: str) -> None:
        # A new dict, not a change: /health iterates it while the share's thread marks another.
        self.unusable = {**self.unusable, voice_id: reason}

    def remove(self, voice_id: str) -> None:
        if voice_id in self.unusable:
            self.unusable = {key: why for key, why in self.unusable.items() if key != voice_id}
        voice = self._voices.pop(voice_id, None)
        if voice is not None:
            self._lower.pop(voice.id.lower(), None)
            self._by_elevenlabs_id.pop(elevenlabs_id(voice), None)

    def resolve_elevenlabs(self, voice_id: str) -> Voice:
        """Like resolve(), and any well-formed unknown ElevenLabs id maps to the default voice.

        Existing ElevenLabs configurations (OpenClaw's default voice, say) then work unchanged.
        """
        try:
            return self.resolve(voice_id)
        except VoiceNotFound:  # (VoiceUnusable is not: a broken stored voice is never swapped)
            if not ELEVENLABS_ID.match(voice_id):
                raise
        log.info("Mapped ElevenLabs voice %s to local voice %s", voice_id, self.default.name)
        return self.default
