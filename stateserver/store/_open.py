"""``open_store``: from a URL and string options to a ready ObjectStore. No I/O besides mkdir.

S3 settings come from the options first and the usual AWS environment variables second
(``AWS_ENDPOINT_URL``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), which obstore reads itself. Options:

    endpoint, region, access_key_id, secret_access_key, session_token, and any other key of
        obstore's S3Config (virtual_hosted_style_request, skip_signature, ...)
    allow_http        "true" to allow a plain-http endpoint; loopback endpoints get it by default
    connect_timeout   e.g. "5s" (default 5s)
    timeout           one request, e.g. "5min" (default); a big download is one request
    max_retries       obstore's own per-request retries (default 3; conditional creates never)
    retry_timeout     seconds obstore keeps retrying one request (default 60)
"""
from __future__ import annotations

import ipaddress
import os
import threading
import urllib.parse
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from obstore.store import LocalStore, MemoryStore, S3Store

from ._durable_local import DurableLocalStore
from ._errors import InvalidStoreUrl
from ._interface import ObjectStore
from ._obstore_backend import ObstoreObjectStore
from ._obstore_errors import summary
from ._urls import StoreUrl, parse_store_url

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

_CLIENT_DEFAULTS: Mapping[str, str] = {"connect_timeout": "5s", "timeout": "5min"}
_CLIENT_KEYS = frozenset({"allow_http", "allow_invalid_certificates", "connect_timeout", "timeout", "proxy_url"})
_DEFAULT_MAX_RETRIES = 3
_DEFAULT_RETRY_TIMEOUT_S = 60.0
_ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

# memory://name is shared by everything in the process that opens the same name, like a bucket.
_named_memory_stores: dict[str, MemoryStore] = {}
_named_memory_lock = threading.Lock()


def open_store(url: str, *, options: Mapping[str, str] | None = None) -> ObjectStore:
    """Open the store at ``url``; raise InvalidStoreUrl if the URL or the options are unusable.

    Wrap the result in ``RetryingObjectStore`` to retry transient failures.
    """
    parsed = parse_store_url(url)
    opts = dict(options or {})
    if parsed.scheme == "s3":
        return _open_s3(parsed, opts)
    if opts:
        raise InvalidStoreUrl(f"cannot open {parsed}: {parsed.scheme} stores take no options "
                              f"(got {sorted(opts)})", store=str(parsed))
    if parsed.scheme == "file":
        return _open_file(parsed)
    return _open_memory(parsed)


def _open_file(parsed: StoreUrl) -> ObjectStore:
    """Writes go through DurableLocalStore (fsynced); reads through obstore's LocalStore."""
    try:
        os.makedirs(parsed.location, exist_ok=True)
        reader = ObstoreObjectStore(LocalStore(parsed.location), url=str(parsed))
        return DurableLocalStore(parsed.location, url=str(parsed), reader=reader)
    except OSError as exc:
        raise InvalidStoreUrl(f"cannot open {parsed}: cannot create the directory: {exc.strerror}",
                              store=str(parsed)) from exc


def _open_memory(parsed: StoreUrl) -> ObjectStore:
    if not parsed.location:
        return ObstoreObjectStore(MemoryStore(), url=str(parsed))
    with _named_memory_lock:
        store = _named_memory_stores.setdefault(parsed.location, MemoryStore())
    return ObstoreObjectStore(store, url=str(parsed))


def _open_s3(parsed: StoreUrl, opts: dict[str, str]) -> ObjectStore:
    """``opts`` loses the keys that are ours or the HTTP client's; the rest is obstore's S3Config."""
    url = str(parsed)
    client = _client_options(url, opts)
    max_retries = _parse_int(url, "max_retries", opts.pop("max_retries", None), _DEFAULT_MAX_RETRIES)
    retry_timeout = _parse_seconds(url, "retry_timeout", opts.pop("retry_timeout", None), _DEFAULT_RETRY_TIMEOUT_S)

    def build(retries: int) -> S3Store:
        retry: RetryConfig = {"max_retries": retries, "retry_timeout": timedelta(seconds=retry_timeout)}
        client_config: ClientConfig = client  # type: ignore[assignment]  # keys checked above
        return S3Store(parsed.location, prefix=parsed.prefix or None, config=opts,  # type: ignore[arg-type]
                       client_options=client_config, retry_config=retry)

    try:
        store, create_store = build(max_retries), build(0)
    except Exception as exc:  # obstore reports bad keys and values as several exception types
        raise InvalidStoreUrl(f"cannot open {url}: {summary(str(exc))}", store=url) from exc
    return ObstoreObjectStore(store, url=url, create_store=create_store)


def _client_options(url: str, opts: dict[str, str]) -> dict[str, Any]:
    """Take the HTTP client's options out of ``opts`` and decide whether plain http is allowed."""
    client: dict[str, Any] = dict(_CLIENT_DEFAULTS)
    client.update({k: opts.pop(k) for k in list(opts) if k in _CLIENT_KEYS})
    for name in ("allow_http", "allow_invalid_certificates"):
        if name in client:
            client[name] = _parse_bool(url, name, client[name])
    endpoint = opts.get("endpoint") or next((os.environ[v] for v in _ENDPOINT_ENV if os.environ.get(v)), None)
    if "allow_http" not in client:
        env_allow = os.environ.get("AWS_ALLOW_HTTP")
        client["allow_http"] = (_parse_bool(url, "AWS_ALLOW_HTTP", env_allow) if env_allow
                                else endpoint is not None and _is_loopback_http(endpoint))
    if endpoint is not None:
        _check_endpoint(url, endpoint, allow_http=client["allow_http"])
    return client


def _is_loopback_http(endpoint: str) -> bool:
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _check_endpoint(url: str, endpoint: str, *, allow_http: bool) -> None:
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidStoreUrl(f"cannot open {url}: endpoint {endpoint!r} is not an http(s) URL", store=url)
    if parts.scheme == "http" and not allow_http:
        raise InvalidStoreUrl(
            f"cannot open {url}: endpoint {endpoint!r} is plain http; only loopback endpoints may use "
            "http unless the option allow_http is 'true'",
            store=url,
        )


def _parse_bool(url: str, name: str, value: object) -> bool:
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidStoreUrl(f"cannot open {url}: {name}={value!r} is not true or false", store=url)


def _parse_int(url: str, name: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        parsed = int(value)
    except ValueError:
        parsed = -1
    if parsed < 0:
        raise InvalidStoreUrl(f"cannot open {url}: {name}={value!r} is not a whole number >= 0", store=url)
    return parsed


def _parse_seconds(url: str, name: str, value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        parsed = float(value.removesuffix("s"))
    except ValueError:
        parsed = -1.0
    if parsed <= 0:
        raise InvalidStoreUrl(f"cannot open {url}: {name}={value!r} is not a number of seconds", store=url)
    return parsed
