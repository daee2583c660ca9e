"""Conversation memory on the request side: which prior turns condition a request, and
remembering each generation as a turn once the engine is done with it.

Explicit context (both dialects): `context: [{"text", "audio_ref"?, "speaker"?}]`, and
ElevenLabs' `previous_request_ids` / `previous_text`. Without any of those, consecutive
requests of one session within CONTEXT_SESSION_GAP_SECONDS continue each other (OpenClaw
Talk mode changes nothing). Unknown, expired or foreign references are ignored with a log
line; a turn is only ever handed to the owner that produced it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Callable

from flask import request

from sesame_server.api.errors import APIError
from sesame_server.config import Settings
from sesame_server.context.turns import FRAME_SECONDS, Turn, TurnCache
from sesame_server.engine.job import Job
from sesame_server.engine.request import ContextTurn, Conversation

log = logging.getLogger(__name__)

MAX_CONTEXT_ITEMS = 20
MAX_REF_LENGTH = 128
SESSION_HEADER = "X-Session-Id"
OTHER_SPEAKER = 1  # the voice itself is speaker 0 (its prompt's speaker)


@dataclass(frozen=True)
class ContextPlan:
    context: tuple[ContextTurn, ...] = ()
    previous_text: str | None = None  # left as text-only context when no turn spoke it
    conversation: Conversation | None = None


def plan_context(cache: TurnCache | None, settings: Settings, body: dict, voice: str, *, invalid_status: int,
                 observe_lookup: Callable[[bool], None] = lambda hit: None) -> ContextPlan:
    """Validate the request's context fields and resolve them (or the implicit session)."""
    items = _context_items(body, settings.max_input_length, invalid_status)
    own_ref = _ref(body.get("audio_ref"), "audio_ref", invalid_status)
    for key in ("previous_text", "next_text"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise APIError(invalid_status, f"{key} must be a string.", param=key, code="string_type")
    for key in ("previous_request_ids", "next_request_ids"):
        ids = body.get(key)
        if ids is not None and (not isinstance(ids, list) or len(ids) > 3 or not all(isinstance(i, str) for i in ids)):
            raise APIError(invalid_status, f"{key} must be a list of at most 3 request ids.", param=key,
                           code="list_type")
    previous_text = body.get("previous_text") or None
    previous_ids = body.get("previous_request_ids") or []
    if cache is None:
        return ContextPlan(previous_text=previous_text)

    session_id = request.headers.get(SESSION_HEADER, "").strip()[:MAX_REF_LENGTH]
    owner = _owner(session_id)
    session = owner if session_id else f"{owner}|voice:{voice}"
    turns: list[Turn | ContextTurn | None] = []
    if items or previous_ids or previous_text:
        for ref in previous_ids:
            turns.append(_lookup(cache, owner, ref, observe_lookup))
        for item in items:
            found = _lookup(cache, owner, item["audio_ref"], observe_lookup) if item.get("audio_ref") else None
            default_speaker = 0 if item.get("audio_ref") else OTHER_SPEAKER
            if found is None and item["text"].strip():  # unresolved: its text still helps
                found = ContextTurn(text=item["text"], speaker=item.get("speaker", default_speaker))
            turns.append(found)
        if previous_text:
            spoken = cache.find_text(owner, previous_text)
            observe_lookup(spoken is not None)
            if spoken is not None:
                turns.append(spoken)
                previous_text = None
    else:
        recent = cache.recent(session, within=settings.context_session_gap_seconds)
        observe_lookup(bool(recent))
        turns.extend(recent)
    context = _as_context([t for t in turns if t is not None], voice)
    return ContextPlan(context, previous_text, Conversation(session=session, owner=owner, audio_ref=own_ref))


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
            text=" ".join(text for text, _ in segments), seconds=frames * FRAME_SECONDS,
            audio_ref=conversation.audio_ref, segments=segments,
        ))
        on_size(len(cache))

    return remember


def _owner(session_id: str) -> str:
    """Who may reference a turn: the explicit session, else (API key, client address)."""
    if session_id:
        return f"session:{session_id}"
    key = request.headers.get("xi-api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12] if key else "-"
    return f"client:{digest}@{request.remote_addr}"


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


def _context_items(body: dict, max_length: int, status: int) -> list[dict]:
    raw = body.get("context")
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_CONTEXT_ITEMS:
        raise APIError(status, f"context must be a list of at most {MAX_CONTEXT_ITEMS} turns.", param="context",
                       code="invalid_context")
    items = []
    for index, item in enumerate(raw):
        where = f"context[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("text", ""), str):
            raise APIError(status, f"{where} must be an object with a 'text' string.", param=where,
                           code="invalid_context")
        text = item.get("text", "")
        ref = _ref(item.get("audio_ref"), f"{where}.audio_ref", status)
        if not text.strip() and not ref:
            raise APIError(status, f"{where} needs a 'text' or an 'audio_ref'.", param=where, code="invalid_context")
        if len(text) > max_length:
            raise APIError(status, f"{where}.text is longer than {max_length} characters.", param=where,
                           code="invalid_context")
        turn = {"text": text, "audio_ref": ref}
        speaker = item.get("speaker")
        if speaker is not None:
            if isinstance(speaker, bool) or not isinstance(speaker, int) or not 0 <= speaker <= 9:
                raise APIError(status, f"{where}.speaker must be an integer 0-9.", param=f"{where}.speaker",
                               code="invalid_context")
            turn["speaker"] = speaker
        items.append(turn)
    return items


def _ref(value, name: str, status: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_REF_LENGTH:
        raise APIError(status, f"{name} must be a string of at most {MAX_REF_LENGTH} characters.", param=name,
                       code="invalid_context")
    return value
