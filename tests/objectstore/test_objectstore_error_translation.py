"""Answers SeaweedFS cannot be made to give (5xx, throttling, timeouts), classified from obstore's
own exception types carrying the text obstore puts in them."""
from __future__ import annotations

import pytest
from obstore.exceptions import AlreadyExistsError, GenericError, PermissionDeniedError, UnauthenticatedError

from stateserver.store import (
    ObjectAlreadyExists,
    ObjectNotFound,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
)
from stateserver.store._obstore_errors import translate

_PUT = "Generic S3 error: Error performing PUT http://127.0.0.1:1/b/k in 3ms - "


def _s3_answer(status: str, code: str, message: str) -> str:
    return (f"{_PUT}Server returned non-2xx status code: {status}: <?xml version=\"1.0\"?><Error>"
            f"<Code>{code}</Code><Message>{message}</Message></Error>\n\nDebug source:\nGeneric {{ ... }}")


@pytest.mark.parametrize(("exc", "kind", "says"), [
    (GenericError(_s3_answer("503 Service Unavailable", "SlowDown", "Reduce your request rate.")),
     StoreUnavailable, "HTTP 503 SlowDown: Reduce your request rate."),
    (GenericError(_s3_answer("500 Internal Server Error", "InternalError", "We hit a snag.")),
     StoreUnavailable, "HTTP 500 InternalError"),
    (GenericError(_s3_answer("429 Too Many Requests", "TooManyRequests", "Slow down.")),
     StoreUnavailable, "HTTP 429"),
    (GenericError(f"{_PUT}HTTP error: error sending request\n\nDebug source:\n HttpError {{\n kind: Timeout,\n"
                  " message: \"operation timed out\" }"),
     StoreUnavailable, "timeout error: operation timed out"),
    (GenericError(_s3_answer("400 Bad Request", "InvalidBucketName", "The specified bucket is not valid.")),
     StoreError, "InvalidBucketName"),
    (PermissionDeniedError(_s3_answer("403 Forbidden", "SignatureDoesNotMatch", "Check your key.")),
     StoreAccessDenied, "rejected the credentials"),
    (PermissionDeniedError(_s3_answer("403 Forbidden", "AccessDenied", "Access Denied.")),
     StoreAccessDenied, "lack permission"),
    (UnauthenticatedError("The operation lacked valid authentication credentials for path k"),
     StoreAccessDenied, "access denied"),
    (AlreadyExistsError("Object at location k already exists"), ObjectAlreadyExists, "already exists"),
    (FileNotFoundError("Object at location k not found"), ObjectNotFound, "no such object"),
    (PermissionError(13, "Permission denied"), StoreAccessDenied, "local file system"),
])
def test_each_answer_becomes_the_error_that_says_what_to_do(
    exc: BaseException, kind: type[StoreError], says: str
) -> None:
    error = translate(exc, store="s3://b", key="k", operation="write")
    assert type(error) is kind
    assert says in str(error)
    assert str(error).startswith("cannot write 'k' in s3://b")
    assert "Debug source" not in str(error)
    assert error.key == "k" and error.store == "s3://b"
