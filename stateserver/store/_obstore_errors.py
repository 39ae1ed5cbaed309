"""Translating obstore's exceptions into ours: the only module that knows obstore's error kinds.

obstore raises a few typed errors (AlreadyExists, PermissionDenied, ...) and the builtin
FileNotFoundError, but reports transport failures and most HTTP statuses as ``GenericError`` whose
only structure is its text. We read that text for the HTTP status, the S3 error code and whether
the request failed below HTTP; anything we cannot place becomes a plain, non-retriable StoreError.
"""
from __future__ import annotations

import re
from typing import Final

from obstore.exceptions import (
    AlreadyExistsError,
    GenericError,
    NotModifiedError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)

from ._errors import (
    ObjectAlreadyExists,
    ObjectNotFound,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)

_STATUS = re.compile(r"(?:status code: |status: )(\d{3})")
_S3_CODE = re.compile(r"<Code>([^<]*)</Code>")
_S3_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_HTTP_KIND = re.compile(r"HttpError \{\s*kind: (\w+)")
_OS_MESSAGE = re.compile(r'message: "([^"]*)"')
# How object_store (through reqwest) reports a request that never got an HTTP answer.
_TRANSPORT = re.compile(r"HTTP error|HttpError|error sending request|timed out|connection", re.IGNORECASE)
# Throttling answers are 4xx on some S3-compatible stores but mean "retry later".
_THROTTLED_CODES: Final = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"})
_CREDENTIAL_CODES: Final = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "InvalidSecurity"}
)


def translate(exc: BaseException, *, store: str, key: str | None, operation: str) -> StoreError:
    """Return the StoreError for ``exc`` raised by ``operation`` on ``key`` (None: whole store)."""
    where = f"{operation} {key!r} in {store}" if key is not None else f"{operation} in {store}"
    text = str(exc)
    status = _status(text)
    s3_code = _first(_S3_CODE, text)
    detail = _detail(text, status, s3_code)

    # We only send conditional writes as creates, and some S3-compatible stores answer a refused
    # create with 412 or 304 rather than with what obstore turns into AlreadyExists.
    if isinstance(exc, (AlreadyExistsError, PreconditionError, NotModifiedError)):
        return ObjectAlreadyExists(f"cannot {where}: an object already exists there", key=key, store=store)
    if s3_code == "NoSuchBucket":
        return StoreError(f"cannot {where}: the bucket does not exist{detail}", key=key, store=store)
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"cannot {where}: no such object", key=key, store=store)
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or status in (401, 403):
        return StoreAccessDenied(_access_denied_message(where, s3_code, detail), key=key, store=store)
    if isinstance(exc, PermissionError):
        return StoreAccessDenied(f"cannot {where}: permission denied on the local file system ({exc.strerror})",
                                 key=key, store=store)
    if _is_transient(exc, text, status, s3_code):
        return StoreUnavailable(f"cannot {where}: the store is unavailable{detail}", key=key, store=store)
    return StoreError(f"cannot {where}: {summary(text)}", key=key, store=store)


def _is_transient(exc: BaseException, text: str, status: int | None, s3_code: str | None) -> bool:
    if s3_code in _THROTTLED_CODES or status == 429 or (status is not None and status >= 500):
        return True
    if status is not None:
        return False  # an HTTP answer other than the above is a definite refusal
    if isinstance(exc, GenericError):
        return bool(_TRANSPORT.search(text))
    return isinstance(exc, (TimeoutError, ConnectionError))


def _access_denied_message(where: str, s3_code: str | None, detail: str) -> str:
    if s3_code in _CREDENTIAL_CODES:
        hint = ("the store rejected the credentials: check the access key and secret "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the store options)")
    else:
        hint = "access denied: the credentials were rejected or lack permission for this operation"
    return f"cannot {where}: {hint}{detail}"


def _status(text: str) -> int | None:
    found = _first(_STATUS, text)
    return int(found) if found is not None else None


def _detail(text: str, status: int | None, s3_code: str | None) -> str:
    """A short parenthesis with what the server said, e.g. ' (HTTP 403 InvalidAccessKeyId: ...)'."""
    parts = []
    if status is not None:
        parts.append(f"HTTP {status}")
    if s3_code:
        s3_message = _first(_S3_MESSAGE, text)
        parts.append(f"{s3_code}: {s3_message}" if s3_message else s3_code)
    if status is None and not s3_code:
        kind = _first(_HTTP_KIND, text)
        reasons = _OS_MESSAGE.findall(text)
        if kind is not None:
            parts.append(f"{kind.lower()} error" + (f": {reasons[-1]}" if reasons else ""))
        else:
            parts.append(summary(text))
    return f" ({' '.join(parts)})" if parts else ""


def summary(text: str) -> str:
    """obstore's message without its multi-line 'Debug source' dump."""
    head = text.split("\n\nDebug source:", 1)[0].strip()
    return head.splitlines()[0] if head else "unknown error"


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return match.group(1) if match else None
