"""An ``s3://bucket/key`` input: snapshotted, by content, into the host cache.

``s3://b/k/`` (or ``s3://b/k`` when no object ``k`` exists) is the prefix ``k/``: every
object under it is a file at its key relative to the prefix; ``s3://b/k`` naming an
object is a file input. Each object is downloaded once, hashed on the way, and stored
in the host cache (then in orch's store, like any input): a run never reads the source
bucket, so a source that changes later cannot change a run's data. An object's
``(size, ETag, LastModified)`` is its stat-cache key, so an unchanged source costs one
listing. A download whose ETag or size differs from the listing's is an error: the
source changed while it was being read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .._util.files import atomic_write
from ..errors import InputError
from .cache import HostCache
from .manifest import FileEntry, Manifest, check_path

S3ClientFactory = Callable[[str | None], Any]
"""Makes a boto3 S3 client for an endpoint (None: boto3's default / AWS_ENDPOINT_URL)."""


@dataclass(frozen=True)
class _Object:
    rel: str
    key: str
    size: int
    etag: str
    modified: str


def _split(source: str) -> tuple[str, str]:
    bucket, _, key = source[len("s3://") :].partition("/")
    return bucket, key


def _error(name: str, source: str, exc: Exception) -> InputError:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in ("NoSuchBucket", "NoSuchKey", "404", "NotFound"):
            return InputError(f"input {name!r}: {source} does not exist ({code})")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return InputError(
                f"input {name!r}: {source} is not readable ({code}): check the credentials"
            )
        return InputError(f"input {name!r}: {source}: {code}: {error.get('Message', '')}")
    return InputError(f"input {name!r}: cannot reach {source}: {' '.join(str(exc).split())}")


def _list(client: Any, name: str, source: str) -> tuple[str, list[_Object]]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _split(source)
    try:
        if key and not key.endswith("/"):
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                obj = _Object(
                    "",
                    key,
                    int(head["ContentLength"]),
                    str(head.get("ETag", "")),
                    str(head.get("LastModified", "")),
                )
                return "file", [obj]
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code not in ("404", "NoSuchKey", "NotFound"):
                    raise
            key += "/"
        objects = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", []):
                rel = item["Key"][len(key) :]
                if rel == "" or rel.endswith("/"):
                    continue  # "directory" markers hold no file
                problem = check_path(rel)
                if problem:
                    raise InputError(f"input {name!r}: object {item['Key']!r}: {problem}")
                objects.append(
                    _Object(
                        rel,
                        item["Key"],
                        int(item["Size"]),
                        str(item.get("ETag", "")),
                        str(item.get("LastModified")),
                    )
                )
    except (ClientError, BotoCoreError) as exc:
        raise _error(name, source, exc) from None
    if not objects:
        raise InputError(f"input {name!r}: {source} does not exist (no object, no prefix)")
    return "dir", objects


def snapshot(
    name: str,
    source: str,
    endpoint: str | None,
    make_client: S3ClientFactory,
    cache: HostCache,
    *,
    workers: int = 16,
) -> Manifest:
    """The manifest of an S3 input, with every one of its files in the host cache."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = make_client(endpoint)
    kind, objects = _list(client, name, source)
    where = f"{client.meta.endpoint_url}|{source}"
    stat_path = (
        cache.root / "stat" / ("s3-" + hashlib.sha256(where.encode()).hexdigest()[:32] + ".json")
    )
    try:
        known = json.loads(stat_path.read_bytes())
    except (OSError, ValueError):
        known = {}
    bucket, _ = _split(source)

    def sha_of(obj: _Object) -> str:
        entry = known.get(obj.key) if isinstance(known, dict) else None
        if (
            isinstance(entry, list)
            and entry[:3] == [obj.size, obj.etag, obj.modified]
            and cache.has_object(str(entry[3]))
        ):
            return str(entry[3])
        try:
            response = client.get_object(Bucket=bucket, Key=obj.key, IfMatch=obj.etag)
            body = response["Body"]
            digest = hashlib.sha256()
            tmp = cache.temp_path(FileEntry(obj.rel, obj.size, "0" * 64))
            total = 0
            with tmp.open("wb") as out:
                for chunk in body.iter_chunks(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    total += len(chunk)
            if total != obj.size or str(response.get("ETag", obj.etag)) != obj.etag:
                tmp.unlink(missing_ok=True)
                raise InputError(
                    f"input {name!r}: s3://{bucket}/{obj.key} changed while it was read: "
                    "run again once the source is stable"
                )
            sha = digest.hexdigest()
            cache.add_object_file(FileEntry(obj.rel, obj.size, sha), tmp)
            return sha
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412"):
                raise InputError(
                    f"input {name!r}: s3://{bucket}/{obj.key} changed while it was read: "
                    "run again once the source is stable"
                ) from None
            raise _error(name, f"s3://{bucket}/{obj.key}", exc) from None
        except BotoCoreError as exc:
            raise _error(name, f"s3://{bucket}/{obj.key}", exc) from None

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(objects)))) as pool:
        shas = list(pool.map(sha_of, objects))
    atomic_write(
        stat_path,
        json.dumps(
            {
                obj.key: [obj.size, obj.etag, obj.modified, sha]
                for obj, sha in zip(objects, shas, strict=True)
            }
        ).encode(),
        fsync=False,
    )
    entries = [FileEntry(obj.rel, obj.size, sha) for obj, sha in zip(objects, shas, strict=True)]
    try:
        return Manifest.build(kind, entries)
    except ValueError as exc:
        raise InputError(f"input {name!r}: {exc}") from None
