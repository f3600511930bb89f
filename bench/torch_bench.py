"""The ``torch`` section: a real PyTorch stack (``bench/torch/requirements.lock``: torch
2.13.0+cpu, numpy and torch's dependencies, from ``pip-compile --generate-hashes``) against
the conventional way, a ``docker build`` that pip-installs the same wheels.

The measurement is :func:`envbench.measure` (its docstring lists the figures): here
``torch_cold_build_ratio``, ``torch_one_package_rebuild_ratio`` (typing-extensions 4.16.0
-> 4.15.0), ``torch_per_run_ratio`` (a tiny training run, ``orch sweep`` of 6 runs with
``--jobs 1`` against ``docker run`` of the pip-built image, interleaved) and
``torch_store_bytes_ratio``. The ``project`` section measures the same on a real
project's lock (project_bench.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import envbench
from context import Ctx

HERE = Path(__file__).resolve().parent / "torch"
LOCK = HERE / "requirements.lock"
TRAIN = """\
import json, os
import torch
torch.manual_seed(0)
torch.set_num_threads(1)
x = torch.randn(256, 8)
y = x @ torch.arange(8.0) + 0.5
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for _ in range(50):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), y)
    loss.backward()
    opt.step()
out = os.environ.get("ORCH_OUTPUT", "/tmp")
json.dump({"loss": round(loss.item(), 6)}, open(os.path.join(out, "metrics.json"), "w"))
"""
CASE = envbench.Case(
    prefix="torch",
    lock=LOCK,
    train=TRAIN,
    change="typing-extensions",
    change_lines=envbench.TYPING_EXTENSIONS_4_15,
    runs=6,
)


def torch(ctx: Ctx) -> dict[str, Any]:
    return envbench.measure(ctx, CASE)
