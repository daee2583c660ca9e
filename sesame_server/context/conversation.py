"""Conversation memory on the request side: which prior turns condition a request, and
remembering each generation as a turn once the engine is done with it.

Explicit context (both dialects): `context: [{"text", "audio_ref"?, "speaker"?}]`, and
ElevenLabs' `previous_request_ids` / `previous_text`. Without any of those, consecutive
requests of one session within CONTEXT_SESSION_GAP_SECONDS continue each other (OpenClaw
Talk mode changes nothing). Unknown, expired or foreign references are ignored with a log
line; a turn is only ever handed to the owner that produced it.

The owner is the caller, not a header: an X-Session-Id belongs to the caller that sent it,
so another caller sending the same id gets a session of its own and sees exactly what a new
session sees. A caller is the key it sends (any value, whether or not API_KEY checks it: it
stays the same when the client's address changes or it comes through another balancer);
one that sends no key is its address (the client's own behind PROXY_HOPS).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Callable

from sesame_server.config import Settings
from sesame_server.context.fields import MAX_REF_LENGTH, ContextFields
from sesame_server.context.turns import Turn, TurnCache
from sesame_server.engine.job import Job
from sesame_server.engine.request import ContextTurn, Conversation
from sesame_server.spoken.policy import spoken_text

log = logging.getLogger(__name__)

OTHER_SPEAKER = 1  # the voice itself is speaker 0 (its prompt's speaker)


class ContextError(ValueError):
    """A context field is malformed; each dialect renders it with its own status code."""

    def __init__(self, message: str, *, param: str, code: str = "invalid_context"):
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Caller:
    """Who is asking, as far as conversation memory cares (read from the HTTP request by the API)."""

    session_id: str = ""  # X-Session-Id, if the client sent one
    api_key: str = ""  # the key it sent (any value): tells apart clients behind one address
    address: str = ""  # client IP address (ProxyFix's, behind PROXY_HOPS)


@dataclass(frozen=True)
class ContextPlan:
    context: tuple[ContextTurn, ...] = ()
    previous_text: str | None = None  # left as text-only context when no turn spoke it
    conversation: Conversation | None = None


def plan_context(cache: TurnCache | None, settings: Settings, fields: ContextFields, voice: str, caller: Caller,
                 observe_lookup: Callable[[bool], None] = lambda hit: None,
                 observe_cold_start: Callable[[str], None] | None = None) -> ContextPlan:
    """Resolve the request's context fields (already schema-valid) or its implicit session.

    `observe_cold_start(reason)`, when given, hears of a client that expected continuity and
    gets none (a line is logged too): its X-Session-Id has no recent turns here ("session"),
    or none of the turns it named is known here ("reference"). Without an X-Session-Id or
    references the client asked for nothing: not counted. The server's own sessions
    (WebSocket contexts, dialogue lines) pass none.

    Raises ContextError naming the field for what only the settings can tell."""
    items = fields.context or []
    for index, item in enumerate(items):
        where = f"context[{index}]"
        if not item.text.strip() and not item.audio_ref:
            raise ContextError(f"{where} needs a 'text' or an 'audio_ref'.", param=where)
        if len(item.text) > settings.max_input_length:
            raise ContextError(f"{where}.text is longer than {settings.max_input_length} characters.", param=where)
    for name, text in (("previous_text", fields.previous_text), ("next_text", fields.next_text)):
        if text and len(text) > settings.max_input_length:  # it is spoken (normalized) to be found, as input is
            raise ContextError(f"{name} is longer than {settings.max_input_length} characters.", param=name)
    previous_text = fields.previous_text or None
    if cache is None:
        return ContextPlan(previous_text=previous_text)

    session_id = caller.session_id.strip()[:MAX_REF_LENGTH]
    owner = _owner(session_id, caller)
    session = owner if session_id else f"{owner}|voice:{voice}"
    turns: list[Turn | ContextTurn | None] = []
    previous_ids = fields.previous_request_ids or []
    if items or previous_ids or previous_text:
        for ref in previous_ids:
            turns.append(_lookup(cache, owner, ref, observe_lookup))
        for item in items:
            found = _lookup(cache, owner, item.audio_ref, observe_lookup) if item.audio_ref else None
            if found is None and item.text.strip():  # unresolved: its text still helps
                default_speaker = 0 if item.audio_ref else OTHER_SPEAKER
                found = ContextTurn(text=item.text, speaker=default_speaker if item.speaker is None else item.speaker)
            turns.append(found)
        if previous_text:
            # Turns remember what was spoken (the text front end's form); the client sends what it wrote.
            said = spoken_text(previous_text, settings).text
            spoken = cache.find_text(owner, previous_text, said)
            observe_lookup(spoken is not None)
            if spoken is not None:
                turns.append(spoken)
                previous_text = None
            else:
                previous_text = said  # text-only context: in the form the model reads
        named = len(previous_ids) + sum(1 for item in items if item.audio_ref)
        if observe_cold_start and named and not any(isinstance(turn, Turn) for turn in turns):
            log.info("None of the %d turns the request names is on this node (%s): starting cold", named,
                     f"session {session_id!r}" if session_id else "no X-Session-Id")
            observe_cold_start("reference")
    else:
        recent = cache.recent(session, within=settings.context_session_gap_seconds)
        observe_lookup(bool(recent))
        turns.extend(recent)
        if observe_cold_start and session_id and not recent:
            # A new session, one past its gap, or one whose node went away: this node cannot tell.
            log.info("Session %r has no stored turns on this node: starting cold", session_id)
            observe_cold_start("session")
    context = _as_context([t for t in turns if t is not None], voice)
    return ContextPlan(context, previous_text, Conversation(session=session, owner=owner, audio_ref=fields.audio_ref))


def remember_turns(cache: TurnCache, on_size: Callable[[int], None] = lambda size: None) -> Callable[[Job], None]:
    """An engine observer storing each generation with audio as its session's newest turn."""

    def remember(job: Job) -> None:
        conversation = job.request.conversation
        segments = tuple((text, codes) for text, codes in job.segments if codes is not None)
        frames = sum(int(codes.shape[1]) for _, codes in segments)
        if conversation is None or frames == 0:
            return
        cache.add(conversation.session, Turn(
            request_id=job.request.request_id, owner=conversation.owner, voice=job.request.voice,
            text=" ".join(text for text, _ in segments), seconds=frames * job.info.frame_seconds,
            audio_ref=conversation.audio_ref, segments=segments,
        ))
        on_size(len(cache))

    return remember


def _owner(session_id: str, caller: Caller) -> str:
    """Who may reference a turn: the explicit session of this caller, else (API key, client
    address). The same on every node: the turn store keeps it with each turn."""
    if session_id:
        return f"session:{session_id}|{_key_digest(caller) or '@' + caller.address}"
    return f"client:{_key_digest(caller) or '-'}@{caller.address}"


def _key_digest(caller: Caller) -> str:
    """The key, never itself: owners are logged and kept in the shared store."""
    return hashlib.sha256(caller.api_key.encode()).hexdigest()[:16] if caller.api_key else ""


def _lookup(cache: TurnCache, owner: str, ref: str, observe: Callable[[bool], None]) -> Turn | None:
    turn = cache.lookup(owner, ref)
    observe(turn is not None)
    if turn is None:
        log.info("Context reference %r is unknown, expired or not this client's: ignored", ref)
    return turn


def _as_context(turns: list[Turn | ContextTurn], voice: str) -> tuple[ContextTurn, ...]:
    """Cached turns become one segment per sentence spoken; other voices speak as speaker 1."""
    context: list[ContextTurn] = []
    seen: set[str] = set()
    for turn in turns:
        if isinstance(turn, ContextTurn):
            context.append(turn)
            continue
        if turn.request_id in seen:
            continue
        seen.add(turn.request_id)
        speaker = turn.speaker if turn.voice == voice else OTHER_SPEAKER
        context.extend(ContextTurn(text=text, speaker=speaker, codes=codes, turn_id=turn.request_id)
                       for text, codes in turn.parts)
    return tuple(context)
