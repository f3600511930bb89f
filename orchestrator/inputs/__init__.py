"""Data inputs: datasets pinned by content, mounted read-only, part of a run's identity.

orch.yaml declares them (``inputs: {name: path | s3://bucket/key}``); a config names one
with ``${orch.input:NAME}`` (-> ``/orch/inputs/NAME``). The flow, one way::

    decl      orch.yaml's inputs, which ones a composed config names       (decl)
    manifest  canonical list of (path, size, exec, sha256); its hash is    (manifest)
              the input's digest, part of the run id
    scan      local source -> manifest, through a stat cache               (scan)
    s3source  s3:// source -> manifest, snapshotted into the host cache    (s3source)
    cache     content-addressed, immutable host cache: objects, trees      (cache)
    transfer  host cache <-> store blobs; materialize() on a run's node    (transfer)
    pin       what the sweep driver and ``orch inputs`` call               (pin)
    prune     what no recent run mounted, out of the host cache            (prune)

This package knows nothing of Docker, backends or the CLI; it takes the store's blobs
(``RunStore.blobs``) and, for S3 sources, a client factory as parameters.

Imports only :mod:`orchestrator.schema` and :mod:`orchestrator._util`; the store's
blobs come in as a parameter, so it never imports the store.
"""

from __future__ import annotations

from .cache import HostCache as HostCache
from .decl import MOUNT_ROOT as MOUNT_ROOT
from .decl import InputDecl as InputDecl
from .decl import env_name as env_name
from .decl import mount_path as mount_path
from .decl import names_in_config as names_in_config
from .decl import names_in_tree as names_in_tree
from .decl import parse_inputs as parse_inputs
from .decl import resolve_input as resolve_input
from .decl import run_inputs as run_inputs
from .manifest import FileEntry as FileEntry
from .manifest import Manifest as Manifest
from .pin import InputStatus as InputStatus
from .pin import Pinned as Pinned
from .pin import describe as describe
from .pin import from_store as from_store
from .pin import pin as pin
from .pin import render_status as render_status
from .pin import stage as stage
from .pin import status as status
from .prune import Pruned as Pruned
from .prune import prune as prune
from .s3source import S3ClientFactory as S3ClientFactory
from .scan import ScanStats as ScanStats
from .scan import StatCache as StatCache
from .scan import scan as scan
from .transfer import fetch as fetch
from .transfer import materialize as materialize
from .transfer import upload as upload

__all__ = [
    "MOUNT_ROOT",
    "FileEntry",
    "HostCache",
    "InputDecl",
    "InputStatus",
    "Manifest",
    "Pinned",
    "Pruned",
    "S3ClientFactory",
    "ScanStats",
    "StatCache",
    "describe",
    "env_name",
    "fetch",
    "from_store",
    "materialize",
    "mount_path",
    "names_in_config",
    "names_in_tree",
    "parse_inputs",
    "pin",
    "prune",
    "render_status",
    "resolve_input",
    "run_inputs",
    "scan",
    "stage",
    "status",
    "upload",
]
