"""A store in an S3 bucket (AWS, SeaweedFS, MinIO, ...), under an optional key prefix.

The boto3 client is made by :func:`make_client` (or by the caller) and injected; boto3
clients are thread-safe, so one store serves every worker thread. Two layers of retry:
botocore's own (standard mode) for blips, and ours around each operation, with
exponential backoff for up to ``retry_budget_s``, so a server that is down for a few
seconds (a restart) loses nothing. botocore errors become StoreError/NotFound here.

Why one module of this size: it is one class, the :class:`~.interface.Store` contract over S3,
with the retry, conditional-write and clock rules every method shares.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from boto3.exceptions import Boto3Error
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .._util.files import atomic_writer
from ..errors import NotFound, StoreError, UsageError
from .interface import check_key, check_prefix

if TYPE_CHECKING:  # boto3-stubs[s3] (a dev dependency); without it, Any
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

#: How long one operation keeps retrying a server that is unreachable or failing (5xx).
DEFAULT_RETRY_BUDGET_S = 60.0
#: Opening checks the bucket with a shorter budget: a mistyped endpoint should be
#: reported in seconds, while an outage in the middle of a sweep is ridden out.
OPEN_BUDGET_S = 10.0
#: Files above this go up in parts (a single PUT is limited to 5 GiB).
MULTIPART_THRESHOLD = 512 * 1024 * 1024
#: A blob bigger than this is fetched as ranged GETs of this size, RANGE_WORKERS at once.
RANGE_PART = 16 * 1024 * 1024
RANGE_WORKERS = 6

_RETRY_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "RequestTimeout",
    "ConditionalRequestConflict",  # AWS: a concurrent conditional write is in flight
}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_AUTH_CODES = {
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}
_CREDENTIALS_HINT = (
    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the key's permissions"
)


def make_client(
    endpoint: str | None,
    *,
    max_attempts: int = 5,
    connect_timeout: float = 2.0,
    read_timeout: float = 20.0,
    max_pool_connections: int = 64,
) -> S3Client:
    """A boto3 S3 client; credentials and region come from boto3's usual chain.

    ``endpoint`` None lets boto3 read ``AWS_ENDPOINT_URL`` itself (else AWS). Each call
    gets its own Session: sessions are not thread-safe, the client they make is.
    """
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {
        "retries": {"mode": "standard", "max_attempts": max_attempts},
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "max_pool_connections": max_pool_connections,
        "tcp_keepalive": True,
        # S3-compatible servers vary in their support for the newer default checksums.
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    if endpoint or os.environ.get("AWS_ENDPOINT_URL"):
        options["s3"] = {"addressing_style": "path"}  # SeaweedFS/MinIO: no bucket DNS names
    session = boto3.session.Session()
    region = session.region_name or "us-east-1"
    try:
        return session.client(
            "s3", endpoint_url=endpoint, region_name=region, config=Config(**options)
        )
    except ValueError as exc:  # botocore's "Invalid endpoint: ..."
        shown = endpoint or os.environ.get("AWS_ENDPOINT_URL")
        raise UsageError(
            f"invalid S3 endpoint {shown!r}: expected http(s)://HOST[:PORT] "
            f"(--s3-endpoint or AWS_ENDPOINT_URL)"
        ) from exc


def _total_size(response: Mapping[str, Any]) -> int | None:
    """The object's full size from a ranged GET's ``Content-Range: bytes 0-N/SIZE``."""
    content_range = str(response.get("ContentRange") or "")
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", status)), int(status or 0)


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, SSLError):
        return False  # a TLS misconfiguration does not heal by waiting
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        code, status = _code(exc)
        return status >= 500 or code in _RETRY_CODES
    return False


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class S3Store:
    """Keys live at ``<prefix>/<key>`` in ``bucket``; ``client`` is a boto3 S3 client."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
        check: bool = True,
        open_budget_s: float = OPEN_BUDGET_S,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint: str = client.meta.endpoint_url
        self.retry_budget_s = retry_budget_s
        #: Whether the server enforces ``If-None-Match: *`` (None: not probed yet).
        self.conditional_writes: bool | None = None
        self._probe_lock = threading.Lock()
        if check:
            self.check_bucket(min(retry_budget_s, open_budget_s))

    # -- plumbing ---------------------------------------------------------------------

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, action: str, key: str, fn: Callable[[], T], budget: float | None = None) -> T:
        """Run ``fn``; retry transient failures with backoff until the budget is spent."""
        budget = self.retry_budget_s if budget is None else budget
        start = time.monotonic()
        delay = 0.25
        while True:
            try:
                return fn()
            except (BotoCoreError, ClientError) as exc:
                elapsed = time.monotonic() - start
                if not _retryable(exc) or elapsed + delay > budget:
                    raise self._translate(exc, action, key, elapsed) from exc
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 8.0)

    def _translate(self, exc: Exception, action: str, key: str, elapsed: float) -> StoreError:
        where = f"{self.uri}/{key}" if key else self.uri
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StoreError(
                f"no usable AWS credentials for {self.uri}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(exc, SSLError):
            return StoreError(
                f"TLS error talking to S3 endpoint {self.endpoint}: {_one_line(exc)}; "
                "check the endpoint's scheme (http/https) and certificates"
            )
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return StoreError(
                f"cannot reach S3 endpoint {self.endpoint} (gave up after {elapsed:.0f}s): "
                "check that the server runs and --s3-endpoint / AWS_ENDPOINT_URL"
            )
        if isinstance(exc, ClientError):
            code, status = _code(exc)
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            if action == "open" and not any(name.startswith("x-amz-") for name in headers):
                return StoreError(
                    f"{self.endpoint} answered HTTP {status} but does not look like an S3 "
                    "server: check --s3-endpoint / AWS_ENDPOINT_URL"
                )
            if code == "NoSuchBucket" or (action == "open" and status == 404):
                return StoreError(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint}: create it "
                    f"first, e.g. aws s3 mb s3://{self.bucket}"
                )
            if code in _NOT_FOUND_CODES:
                return NotFound(f"no such key {key!r} in {self.uri}")
            if code in _AUTH_CODES or status == 403:
                return StoreError(
                    f"S3 at {self.endpoint} refused access to {where} ({code}): {_CREDENTIALS_HINT}"
                )
            message = exc.response.get("Error", {}).get("Message", "")
            return StoreError(
                f"S3 {action} of {where} failed: {code} {_one_line(message)}".rstrip()
            )
        return StoreError(f"S3 {action} of {where} failed: {_one_line(exc)}")

    def check_bucket(self, budget: float) -> None:
        """Fail early, with a message that says what to do, if the bucket is unusable."""
        self._call("open", "", lambda: self.client.head_bucket(Bucket=self.bucket), budget)

    def check_conditional_writes(self) -> None:
        """Refuse a server that ignores ``If-None-Match: *``, probed once per store object.

        Claims, trials and blobs rest on a conditional create that exactly one writer wins;
        a server that accepts the second write silently (older or partial S3
        implementations) would let every submitter run every run. Probed on the first
        :meth:`create`, with an object of its own, and the answer kept.
        """
        with self._probe_lock:
            if self.conditional_writes is None:
                self.conditional_writes = self._probe_conditional()
        if not self.conditional_writes:
            raise StoreError(
                f"S3 store {self.uri} at {self.endpoint} does not enforce conditional writes "
                "(a second PUT with If-None-Match: * was accepted): orch's claims need them "
                "to run each run once; use a server that supports them (AWS S3, SeaweedFS, "
                "MinIO) or a directory store"
            )

    def _probe_conditional(self) -> bool:
        full = self._full(f"probes/conditional-{uuid.uuid4().hex}")

        def put() -> bool:
            try:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=b"probe",
                                       IfNoneMatch="*")
                return True
            except ClientError as exc:
                code, status = _code(exc)
                if code != "PreconditionFailed" and status != 412:
                    raise
                return False

        try:
            self._call("create", "probes/conditional", put)
            # The first write may have been answered as refused after a retry; the second
            # must be refused in any case.
            return not self._call("create", "probes/conditional", put)
        finally:
            self._call("delete", "probes/conditional",
                       lambda: self.client.delete_object(Bucket=self.bucket, Key=full))

    # -- the Store interface ----------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        full = self._full(key)
        body = bytes(data)
        self._call(
            "put", key, lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=body)
        )

    def put_file(self, key: str, path: Path) -> None:
        full = self._full(key)
        source = Path(path)
        try:
            size = source.stat().st_size
        except OSError as exc:
            raise StoreError(f"cannot store {key!r}: source file {source} is unreadable") from exc

        def upload() -> None:
            if size > MULTIPART_THRESHOLD:
                from boto3.s3.transfer import TransferConfig

                self.client.upload_file(
                    str(source), self.bucket, full, Config=TransferConfig(max_concurrency=4)
                )
                return
            with source.open("rb") as handle:  # reopened per attempt: a fresh stream
                self.client.put_object(Bucket=self.bucket, Key=full, Body=handle)

        try:
            self._call("put", key, upload)
        except (Boto3Error, OSError) as exc:  # S3UploadFailedError, an unreadable file
            raise StoreError(f"S3 upload of {self.uri}/{key} failed: {_one_line(exc)}") from exc

    def get(self, key: str) -> bytes:
        full = self._full(key)

        def fetch() -> bytes:
            response = self.client.get_object(Bucket=self.bucket, Key=full)
            return bytes(response["Body"].read())

        return self._call("get", key, fetch)

    def get_file(
        self, key: str, path: Path, *, progress: Callable[[int], None] | None = None
    ) -> None:
        """Download the object to ``path`` (atomically); ``progress`` is called with each
        chunk's size, from worker threads too (an exception it raises stops the download,
        leaving nothing at ``path``; a retried attempt reports its bytes again)."""
        full = self._full(key)
        target = Path(path)

        def fetch() -> None:
            try:
                first = f"bytes=0-{RANGE_PART - 1}"
                response = self.client.get_object(Bucket=self.bucket, Key=full, Range=first)
            except ClientError as exc:
                if _code(exc)[0] not in ("InvalidRange", "416"):
                    raise
                # an empty object has no first byte to range over
                response = self.client.get_object(Bucket=self.bucket, Key=full)
            size = _total_size(response)
            # A copy out of the store, not synced (see DirStore.get_file); a failed attempt
            # leaves nothing behind, and the next one starts a fresh file.
            with atomic_writer(target, fsync=False) as handle:
                for chunk in response["Body"].iter_chunks(1024 * 1024):
                    handle.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                if size is not None and size > RANGE_PART:
                    self._rest_in_parts(full, size, handle, progress)

        try:
            self._call("get", key, fetch)
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from exc

    def _rest_in_parts(
        self, full: str, size: int, handle: BinaryIO,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """The bytes after the first part, as ranged GETs side by side, written in place:
        one stream alone is slower than the wire for a big layer."""
        from concurrent.futures import ThreadPoolExecutor

        handle.flush()
        fd = handle.fileno()
        os.ftruncate(fd, size)

        def part(start: int) -> None:
            end = min(start + RANGE_PART, size) - 1
            response = self.client.get_object(
                Bucket=self.bucket, Key=full, Range=f"bytes={start}-{end}"
            )
            offset = start
            for chunk in response["Body"].iter_chunks(1024 * 1024):
                os.pwrite(fd, chunk, offset)
                offset += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            if offset != end + 1:
                raise StoreError(f"S3 get of {full}: range {start}-{end} came back short")

        with ThreadPoolExecutor(RANGE_WORKERS, thread_name_prefix="orch-s3-range") as pool:
            futures = [pool.submit(part, start) for start in range(RANGE_PART, size, RANGE_PART)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:  # a failed or stopped download: no more parts
                    future.cancel()
                raise
        handle.seek(size)

    def _head(self, key: str) -> Mapping[str, Any] | None:
        full = self._full(key)
        try:
            head: Mapping[str, Any] = self._call(
                "head", key, lambda: self.client.head_object(Bucket=self.bucket, Key=full)
            )
        except NotFound:
            return None
        return head

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def list(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""

        def collect() -> list[str]:
            paginator = self.client.get_paginator("list_objects_v2")
            keys: list[str] = []
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                keys.extend(item["Key"][len(base) :] for item in page.get("Contents", ()))
            return keys

        # Collected whole inside the retry: a failure on page 7 restarts the listing.
        return iter(sorted(self._call("list", prefix, collect)))

    def create(self, key: str, data: bytes) -> bool:
        self.check_conditional_writes()
        full = self._full(key)
        body = bytes(data)
        attempts = 0

        def attempt() -> bool | None:
            nonlocal attempts
            attempts += 1
            try:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=body, IfNoneMatch="*")
                return True
            except ClientError as exc:
                code, status = _code(exc)
                if code != "PreconditionFailed" and status != 412:
                    raise
                retried = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
                # After a retry the key may exist *because* our earlier attempt landed and
                # only its answer was lost: the caller decides by comparing the bytes.
                return None if attempts > 1 or retried else False

        created = self._call("create", key, attempt)
        if created is None:
            try:
                return self.get(key) == body
            except NotFound:
                return False
        return created

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=full))

    def age(self, key: str) -> float | None:
        """Seconds since ``key`` was written, by the server's clock on both sides: its
        ``Last-Modified`` against the ``Date`` of the same answer. This machine's clock may
        be minutes off the server's; a lease measured across the two would expire live
        claims (clock ahead) or keep dead ones (clock behind)."""
        head = self._head(key)
        if head is None:
            return None
        modified: dt.datetime = head["LastModified"]
        headers = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        now = dt.datetime.now(dt.UTC)
        server = _http_date(headers.get("date"))
        # ``Date`` has whole seconds: within that of the server, this clock's fractions
        # are the better measure; beyond it (a skewed clock), the server's is the truth.
        if server is not None and abs((now - server).total_seconds()) > _DATE_RESOLUTION_S:
            now = server
        return max(0.0, (now - modified).total_seconds())


#: How far this machine's clock may be from the server's ``Date`` and still be used.
_DATE_RESOLUTION_S = 2.0


def _http_date(value: object) -> dt.datetime | None:
    """An HTTP ``Date`` header as an aware datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
