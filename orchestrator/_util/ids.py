"""The shapes of the identifiers orch accepts, in one place."""

from __future__ import annotations

import re

#: Run and sweep ids orch makes: 12 lowercase hex; a unique prefix names one too.
RUN_ID = re.compile(r"^[0-9a-f]{1,64}\Z")
#: What the store accepts as a run or sweep id (its keys must stay inside the prefix).
STORE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
#: The hex of a SHA-256 digest, spelled once: every pattern of one is built from it
#: (here, and where a digest is found in text: gc's marking, pip's messages, SQL).
SHA256_HEX = "[0-9a-f]{64}"
#: A SHA-256 as bare hex (a lock's hashes, a blob's or a cached layer's file name).
HEX64 = re.compile(rf"^{SHA256_HEX}\Z")
#: An image ID or a blob digest.
IMAGE_ID = re.compile(rf"^sha256:{SHA256_HEX}\Z")
DIGEST = re.compile(rf"^sha256:({SHA256_HEX})\Z")
#: ``name@sha256:<digest>``: a registry reference pinned by content.
DIGEST_REF = re.compile(rf"^[a-z0-9][a-z0-9._/:-]*@sha256:{SHA256_HEX}\Z")
