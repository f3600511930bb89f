"""The ``project`` section: a real project's environment, the lightning-hydra-template's lock
(``tests/fixtures/lightning-hydra-template/requirements.lock``, written by pip-compile:
torch 2.13.0+cpu, lightning, torchmetrics, hydra-core with its sdist-only antlr4 runtime,
hydra-colorlog, rich, rootutils and their dependencies, 38 packages) against the
conventional way, a ``docker build`` that pip-installs the same wheels.

The measurement is :func:`envbench.measure` (its docstring lists the figures), the same
as the ``torch`` section's on a lock four times its size: ``project_cold_build_ratio``,
``project_per_run_ratio`` (the run imports lightning and trains one step of a tiny model
on CPU; ``orch sweep`` of 6 runs with ``--jobs 1`` against ``docker run`` of the
pip-built image, interleaved), ``project_one_package_rebuild_ratio`` (typing-extensions
4.16.0 -> 4.15.0), ``project_store_bytes_ratio``, and the cold build's per-stage trace
(``project_cold_stage_*``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import envbench
from context import Ctx

LOCK = (
    Path(__file__).resolve().parent.parent
    / "tests" / "fixtures" / "lightning-hydra-template" / "requirements.lock"
)
TRAIN = """\
import json, os
import torch
import lightning as L
from torch.utils.data import DataLoader, TensorDataset


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


torch.manual_seed(0)
torch.set_num_threads(1)
x = torch.randn(64, 8)
data = DataLoader(TensorDataset(x, x @ torch.arange(8.0)), batch_size=16)
trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir="/tmp/lightning")
trainer.fit(Tiny(), data)
out = os.environ.get("ORCH_OUTPUT", "/tmp")
loss = float(trainer.callback_metrics["loss"])
json.dump({"loss": round(loss, 6), "steps": trainer.global_step},
          open(os.path.join(out, "metrics.json"), "w"))
"""
CASE = envbench.Case(
    prefix="project",
    lock=LOCK,
    train=TRAIN,
    change="typing-extensions",
    change_lines=envbench.TYPING_EXTENSIONS_4_15,
    runs=6,
)


def project(ctx: Ctx) -> dict[str, Any]:
    return envbench.measure(ctx, CASE)
