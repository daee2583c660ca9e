"""Cloned voices other nodes may add or delete: VOICES_DIR shared by several servers (NFS, a
Kubernetes PersistentVolumeClaim), kept in step with this node's catalogue.

No polling: the catalogue asks as requests come in. What it asks the disk runs on the share's
own thread (voices/share_queue.py), and a request waits for it at most VOICES_WAIT_SECONDS:
a share that stops answering makes a voice "unknown for now", never a hung request.
- At most every VOICES_RESCAN_SECONDS, one directory listing (no file is read for a voice
  already known): a new folder is read and added (or marked unusable), a vanished one is
  forgotten, by the catalogue and by the backend (its prompt codes, its KV prefix).
- A request naming an id this node does not know looks on disk before "voice not found":
  a voice cloned on another node works at once.
- A request naming a cloned voice checks its folder is still there (one stat): a voice
  deleted on another node is refused at once, like any unknown voice.
Writes stay atomic (voices/custom.py: staging folder, fsync, rename), so a folder that is
listed is whole; what it holds is checked before use (voices/voice_file.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from sesame_server.voices.catalogue import VoiceCatalogue
from sesame_server.voices.custom import CustomVoiceStore, Unreadable, is_voice_id
from sesame_server.voices.share_queue import NoAnswer, ShareQueue

log = logging.getLogger(__name__)

# How long a request waits for VOICES_DIR (a listing, a look for a voice, a stat) before it goes
# on with what this node knows; a healthy share answers in milliseconds.
VOICES_WAIT_SECONDS = 2.0
QUIET_SECONDS = 30.0  # a share that does not answer is said once per this, not once per request


class SharedVoices:
    """The catalogue's cloned voices, following VOICES_DIR (the catalogue's VoicesOnDisk)."""

    def __init__(self, store: CustomVoiceStore, catalogue: VoiceCatalogue, *, rescan_seconds: float,
                 forget: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                 wait_seconds: float = VOICES_WAIT_SECONDS):
        self.store = store
        self.catalogue = catalogue
        self.rescan_seconds = rescan_seconds
        self._forget = forget  # the engine's forget_voice: runs on the inference thread
        self._clock = clock
        self._share = ShareQueue(wait_seconds)  # every disk access after load() runs there
        self._listed_at: float | None = None
        self._warned_at: float | None = None
        self.rescans = 0

    def load(self) -> None:
        """The startup scan (every stored voice read and checked); from now on the catalogue
        follows the disk."""
        stored, unreadable = self.store.scan()
        for voice in stored:
            self.catalogue.add(voice.as_voice())
        for broken in unreadable:
            self.catalogue.mark_unusable(Path(broken.path).name, broken.reason)
        self._listed_at = self._clock()
        self.catalogue.follow(self)

    def rescan_if_due(self) -> None:
        """Re-list VOICES_DIR when the last listing is VOICES_RESCAN_SECONDS old (one clock
        read otherwise)."""
        if self._listed_at is not None and self._clock() - self._listed_at < self.rescan_seconds:
            return
        self._listed_at = self._clock()  # first: a failing or slow listing is not retried per request
        try:
            self._share.ask("rescan", self.rescan)
        except NoAnswer as exc:  # the listing lands when the share answers; serve what we know
            self._warn("Re-listing voices: %s; serving the voices known", exc)

    def rescan(self) -> None:
        """One listing: read the folders that are new, forget those that are gone."""
        try:
            on_disk = self.store.on_disk()
        except OSError as exc:  # the share is away (NFS): keep what we know, say so
            log.warning("Cannot list VOICES_DIR %s: %s; voices unchanged", self.store.root, exc)
            return
        self.rescans += 1
        known = self.catalogue.cloned_ids() | set(self.catalogue.unusable)
        for voice_id in sorted(on_disk - known):
            self._take(voice_id)
        for voice_id in sorted(known - on_disk):
            self._drop(voice_id)

    def look_for(self, voice_id: str) -> bool:
        """A request named a voice this node does not know: is it on disk now? (Added if so.)"""
        if not is_voice_id(voice_id):
            return False  # names like "alloy" are never stored voices: no disk access
        try:
            return self._share.ask(f"find:{voice_id}", lambda: self._take(voice_id))
        except NoAnswer as exc:  # unknown for now; added when the share answers
            self._warn("Looking for voice %s: %s; unknown for now", voice_id, exc)
            return False

    def still_there(self, voice_id: str) -> bool:
        """A known cloned voice is about to be used: False (and forgotten) if its folder is gone."""
        try:
            return self._share.ask(f"stat:{voice_id}", lambda: self._check(voice_id))
        except NoAnswer as exc:  # cannot tell: better a failing request than a lost voice
            self._warn("Checking voice %s: %s", voice_id, exc)
            return True

    def _warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= QUIET_SECONDS:
            self._warned_at = now
            log.warning(message, *args)

    def _check(self, voice_id: str) -> bool:
        try:
            present = self.store.exists(voice_id)
        except OSError as exc:  # cannot tell (NFS): better a failing request than a lost voice
            log.warning("Cannot check stored voice %s: %s", voice_id, exc)
            return True
        if not present:
            self._drop(voice_id)
        return present

    def _take(self, voice_id: str) -> bool:
        found = self.store.find(voice_id)
        if found is None:
            return False
        if isinstance(found, Unreadable):
            self.catalogue.mark_unusable(voice_id, found.reason)
        elif self.catalogue.get_known(voice_id) is None:
            self.catalogue.add(found.as_voice())
            log.info("Voice %s (%r) found in %s (added by another node)", voice_id, found.name, self.store.root)
        return True

    def _drop(self, voice_id: str) -> None:
        if voice_id not in self.catalogue.cloned_ids() and voice_id not in self.catalogue.unusable:
            return  # already forgotten (two requests noticed at once)
        self.catalogue.remove(voice_id)
        self.store.forget(voice_id)
        self._forget(voice_id)
        log.info("Voice %s is no longer in %s (deleted by another node): forgotten", voice_id, self.store.root)
