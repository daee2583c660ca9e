"""What kind of failure a model download or load error is, decided in one place.

`backends/csm/hub.py` uses it to turn a Hugging Face error into a ModelFetchError at the
source, and `ops.advice` to pick startup advice for errors nobody explained yet. An
error whose message was already written for the operator derives from ExplainedError, so
advice passes it through instead of explaining the same failure a second time.
"""

from __future__ import annotations

import errno
from typing import Iterator, Literal

LoadErrorKind = Literal["auth", "not_found", "disk", "network", "other"]

# Matched by class name along the MRO, so classifying needs no huggingface_hub, requests
# or httpx import (they are optional, and any of them may raise).
_AUTH = frozenset({"GatedRepoError", "LocalTokenNotFoundError"})
_NOT_FOUND = frozenset({"RepositoryNotFoundError"})  # also what the hub tells anonymous users of private repos
_NETWORK = frozenset({
    "OfflineModeIsEnabled", "LocalEntryNotFoundError",  # not cached, and the hub may not be asked
    "ConnectionError", "ConnectError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutError",
    "TimeoutException", "NewConnectionError", "MaxRetryError", "NameResolutionError", "gaierror",
})
_DISK_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class ExplainedError(Exception):
    """Base for errors whose message already says what failed and what to do."""


def classify_load_error(exc: BaseException) -> LoadErrorKind:
    """auth | not_found | disk | network | other, looking through the cause chain.

    Each link is checked for every kind before moving to its cause: the outermost error
    that says anything specific wins.
    """
    for err in exception_chain(exc):
        names = {cls.__name__ for cls in type(err).__mro__}
        text = str(err).lower()
        status = _status_code(err)
        # GatedRepoError is a RepositoryNotFoundError: auth is checked first.
        if names & _AUTH or status in (401, 403) or "gated" in text or ("401" in text and "unauthorized" in text):
            return "auth"
        if isinstance(err, OSError) and err.errno in _DISK_ERRNOS or "no space left" in text:
            return "disk"
        if names & _NETWORK:
            return "network"
        if names & _NOT_FOUND:
            return "not_found"
    return "other"


def explained(exc: BaseException) -> ExplainedError | None:
    """The first error in the chain whose message was written for the operator, if any."""
    return next((err for err in exception_chain(exc) if isinstance(err, ExplainedError)), None)


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc`, then its causes and contexts, each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _status_code(err: BaseException) -> int | None:
    try:  # httpx-style errors raise (not AttributeError) from half-built attributes
        return getattr(getattr(err, "response", None), "status_code", None)
    except Exception:  # noqa: BLE001 - no status is an answer too
        return None
