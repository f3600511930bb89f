"""Where results live: a directory or an S3 bucket, same layout in both.

    store = open_store("s3://bucket/prefix", project_dir=root)   # or a path, or None
    runs = RunStore(store)                                       # README's "Store layout"

:class:`Store` is the small key/bytes interface (``base``); :class:`RunStore` gives keys
their meaning (``records``); :class:`MemoryStore` stands in for the real ones in tests.

Imports only :mod:`orchestrator.schema`, :mod:`orchestrator.compose` (the project's
store settings) and :mod:`orchestrator._util`: it never knows about Docker, Ray or
SLURM.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from ..errors import UsageError
from .dir import DirStore as DirStore
from .interface import Store as Store
from .interface import check_key as check_key
from .memory import MemoryStore as MemoryStore
from .runstore import RunStore as RunStore

__all__ = ["DirStore", "MemoryStore", "RunStore", "Store", "check_key", "open_store"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]\Z")
_FORMS = "use a directory path, file://PATH or s3://BUCKET[/PREFIX]"


def open_store(
    uri: str | None,
    *,
    project_dir: Path,
    s3_endpoint: str | None = None,
    retry_budget_s: float | None = None,
) -> Store:
    """Open the store named by ``uri``; None means ``<project_dir>/.orch``.

    Relative paths are relative to the working directory. For ``s3://`` the endpoint is
    ``s3_endpoint``, else ``AWS_ENDPOINT_URL`` (read by boto3), else AWS; credentials come
    from boto3's chain and are never written anywhere. The bucket is checked now, so a
    wrong endpoint, bucket or key fails here with a message that says what to fix.
    """
    if uri is None or uri == "":
        return DirStore(Path(project_dir) / ".orch")
    if "\0" in uri:
        raise UsageError(f"store URI {uri!r} contains a NUL character: {_FORMS}")
    if uri.startswith("s3://"):
        return _open_s3(uri, s3_endpoint, retry_budget_s)
    if uri.startswith("file://"):
        path = unquote(uri[len("file://") :])
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        if not path:
            raise UsageError(f"store URI {uri!r} has no path: {_FORMS}")
        return DirStore(Path(path))
    if _SCHEME.match(uri):
        raise UsageError(f"unsupported store URI {uri!r}: {_FORMS}")
    return DirStore(Path(uri))


def _open_s3(uri: str, endpoint: str | None, retry_budget_s: float | None) -> Store:
    from .s3 import DEFAULT_RETRY_BUDGET_S, S3Store, make_client

    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise UsageError(
            f"invalid bucket {bucket!r} in store URI {uri!r}: {_FORMS} "
            "(bucket names are 3-63 characters of a-z, 0-9, '.', '-')"
        )
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except UsageError:
            raise UsageError(f"invalid prefix {prefix!r} in store URI {uri!r}: {_FORMS}") from None
    budget = DEFAULT_RETRY_BUDGET_S if retry_budget_s is None else retry_budget_s
    # A short budget (tests, impatient callers) also needs botocore to give up quickly.
    client = make_client(endpoint or None, max_attempts=5 if budget >= 30 else 1)
    return S3Store(client, bucket, prefix, retry_budget_s=budget)
