"""The shapes of the identifiers orch accepts, in one place."""

from __future__ import annotations

import re

#: Run and sweep ids orch makes: 12 lowercase hex; a unique prefix names one too.
RUN_ID = re.compile(r"^[0-9a-f]{1,64}\Z")
#: What the store accepts as a run or sweep id (its keys must stay inside the prefix).
STORE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
#: An image ID or a blob digest.
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}\Z")
DIGEST = re.compile(r"^sha256:([0-9a-f]{64})\Z")
#: ``name@sha256:<digest>``: a registry reference pinned by content.
DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}\Z")
