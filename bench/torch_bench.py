"""The ``torch`` section: a real PyTorch stack (``bench/torch/requirements.lock``: torch
2.13.0+cpu, numpy and torch's dependencies, from ``pip-compile --generate-hashes``) against
the conventional way, a ``docker build`` that pip-installs the same wheelhouse.

Every ratio is taken side by side in this run:

- ``torch_cold_build_ratio``: orch's environment from a cold layer cache (wheels already
  downloaded) built and loaded into the daemon / ``docker build --no-cache`` of
  ``FROM base; COPY wheels; RUN pip install --require-hashes`` from the same wheels;
- ``torch_one_package_rebuild_ratio``: the same after changing one small package
  (typing-extensions 4.16.0 -> 4.15.0) / orch's own cold build; the bytes that the
  thin archive carries to the daemon for that change are reported beside it;
- ``torch_per_run_ratio``: per-run wall of a tiny training run, ``orch sweep`` of 6 runs
  with ``--jobs 1`` / 6 ``docker run --rm`` of the pip-built image (interleaved);
  ``torch_image_run_ratio``: ``docker run`` of orch's run image / the pip-built one;
- ``torch_store_bytes_ratio``: bytes of the environment's layers in a directory store
  after one sweep / their uncompressed size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import (
    BENCH_CACHE,
    GIT_ENV,
    ORCH,
    REPO,
    BenchError,
    Stat,
    log,
    ratio,
    remove_images,
    run_timed,
)
from context import Ctx

HERE = Path(__file__).resolve().parent / "torch"
LOCK = HERE / "requirements.lock"
#: One small package changed: typing-extensions 4.16.0 -> 4.15.0.
CHANGE = (
    "typing-extensions==4.15.0 "
    "--hash=sha256:f0fa19c6845758ab08074a0cfa8b7aecb71c999ca73d62883bc25cc018c4e548\n"
)
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
DOCKERFILE = """\
FROM {base}
COPY wheels /wheels
COPY requirements.lock /requirements.lock
RUN python3 /wheels/{pip}/pip install --no-index --find-links /wheels --require-hashes \\
    --break-system-packages --no-warn-script-location --disable-pip-version-check \\
    -r /requirements.lock
COPY train.py /app/train.py
WORKDIR /app
USER 65534:65534
ENV HOME=/tmp
CMD ["python3", "train.py"]
"""
RUNS = 6


def _changed_lock() -> str:
    text = LOCK.read_text()
    start = text.index("typing-extensions==")
    end = text.index("\n", text.index("# via", start)) + 1
    return text[:start] + CHANGE + text[end:]


def _wheelhouse(ctx: Ctx) -> tuple[Path, list[Path], Path]:
    """The lock's wheels (and the changed package's, and pip's own) fetched once into a
    persistent bench cache: downloads are not what the section measures."""
    sys.path.insert(0, str(REPO))
    from orchestrator.image import wheels

    store = BENCH_CACHE / "torch-wheels"
    lock = wheels.read_lock(LOCK, "3.11.2")
    files = wheels.ensure_wheels(lock.requirements, store, "3.11.2")
    change = ctx.janitor.tempdir("torch-change-") / "requirements.lock"
    change.write_text(_changed_lock())
    wheels.ensure_wheels(wheels.read_lock(change, "3.11.2").requirements, store, "3.11.2")
    pip_dir = BENCH_CACHE / "torch-pip"
    if not list(pip_dir.glob("pip-*.whl")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "pip",
                "-d",
                str(pip_dir),
            ],
            check=True,
            capture_output=True,
        )
    return store, files, sorted(pip_dir.glob("pip-*.whl"))[-1]


def _project(ctx: Ctx, name: str) -> Path:
    root = ctx.janitor.tempdir("torch-project-") / name
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "config.yaml").write_text("lr: 0.05\n")
    (root / "train.py").write_text(TRAIN)
    shutil.copy(LOCK, root / "requirements.lock")
    data = {
        "name": name,
        "base_image": ctx.base_id,
        "command": ["python3", "train.py"],
        "requirements": "requirements.lock",
        "network": "none",
        "resources": {"cpus": 1, "gpus": 0},
    }
    (root / "orch.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (root / ".gitignore").write_text(".orch/\n")
    _commit(root, init=True)
    label = f"label=org.orch.project={name}"
    ctx.janitor.add(f"remove images of {name}", lambda: remove_images(label))
    return root


def _commit(root: Path, init: bool = False) -> None:
    env = {**os.environ, **GIT_ENV}
    if init:
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", "bench"], check=True, env=env)


def _fresh_cache(ctx: Ctx, wheel_store: Path) -> Path:
    """An orch cache with no layers but the wheelhouse already there (hard links)."""
    root = ctx.janitor.tempdir("torch-cache-")
    shutil.copytree(wheel_store, root / "wheels", copy_function=os.link)
    return root


def _orch_build(ctx: Ctx, root: Path, cache: Path) -> tuple[float, int, Any]:
    """Build the environment and code images and load them: (seconds, bytes sent, env).

    The bytes sent are those of every layer in every archive loaded, the ones the build
    loads while it goes (see orchestrator.image.preload) included."""
    from orchestrator.image import builder
    from orchestrator.image.archive import ThinArchive
    from orchestrator.project import load_project

    sent = [0]
    load = ThinArchive.load

    def counted(archive: ThinArchive, client: Any) -> None:
        sent[0] += sum(
            source.path.stat().st_size if source.path else len(source.data or b"")
            for source in archive.layers.values()
        )
        load(archive, client)

    ThinArchive.load = counted  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        env = builder.prepare(ctx.client, load_project(root), cache_root=cache)
        builder.thin_archive(ctx.client, env, []).load(ctx.client)
        seconds = time.perf_counter() - start
    finally:
        ThinArchive.load = load  # type: ignore[method-assign]
    return seconds, sent[0], env


def _drop_images(ctx: Ctx, env: Any) -> None:
    """Remove the environment and code images, so their layers leave the daemon."""
    for image in (env.code_image.image_id, env.env_image.image_id):
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)


def _docker_build(ctx: Ctx, context: Path, tag: str) -> float:
    timed = run_timed(
        ctx.janitor,
        ["docker", "build", "--no-cache", "-q", "-t", tag, str(context)],
        timeout=1800,
    )
    return timed.seconds


def torch(ctx: Ctx) -> dict[str, Any]:
    log("torch: wheelhouse (downloads once into the bench cache)")
    wheel_store, files, pip_wheel = _wheelhouse(ctx)
    reps = ctx.reps(2, 1)

    # The conventional image's build context: the same wheels, the lock, pip, train.py.
    context = ctx.janitor.tempdir("torch-docker-")
    (context / "wheels").mkdir()
    for wheel in [*files, pip_wheel]:
        os.link(wheel, context / "wheels" / wheel.name)
    shutil.copy(LOCK, context / "requirements.lock")
    (context / "train.py").write_text(TRAIN)
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=ctx.base_id, pip=pip_wheel.name))
    pip_tag = f"orch-bench-pip:{ctx.name}"
    ctx.janitor.add("remove the pip-built image", lambda: remove_images(f"reference={pip_tag}"))

    cold = ctx.row("torch", Stat("orch cold environment build + load (wheels cached)"))
    floor_build = ctx.row("torch", Stat("floor: docker build --no-cache, pip install"))
    root = _project(ctx, f"{ctx.name}-torch")
    env = None
    cache = wheel_store
    for rep in range(reps):
        if env is not None:
            _drop_images(ctx, env)
        cache = _fresh_cache(ctx, wheel_store)
        seconds, _, env = _orch_build(ctx, root, cache)
        cold.add(seconds)
        floor_build.add(_docker_build(ctx, context, pip_tag))
        log(
            f"torch cold build {rep + 1}/{reps}: orch {seconds:.1f}s, "
            f"docker build {floor_build.samples[-1]:.1f}s"
        )
    assert env is not None
    env_bytes = sum(layer.size for layer in env.env_layers)

    # One small package changed, in the cache the last cold build filled.
    before = env
    (root / "requirements.lock").write_text(_changed_lock())
    _commit(root)
    rebuild = ctx.row("torch", Stat("orch rebuild after one small package changed"))
    seconds, sent, after = _orch_build(ctx, root, cache)
    rebuild.add(seconds)
    changed = [layer for layer in after.env_layers if layer not in before.env_layers]
    log(
        f"torch one-package rebuild: {seconds:.2f}s, {sent} bytes sent, {len(changed)} layer(s) new"
    )
    (root / "requirements.lock").write_text(LOCK.read_text())
    _commit(root)

    # Per run: orch sweep vs docker run of the pip-built image, interleaved.
    per = ctx.row("torch", Stat(f"orch sweep, {RUNS} runs, --jobs 1: wall / {RUNS}"))
    floor_run = ctx.row("torch", Stat("floor: docker run --rm pip-built image (interleaved)"))
    image_run = ctx.row("torch", Stat("docker run --rm orch run image"))
    store = ctx.store("torch")
    env_cache = {"ORCH_CACHE": str(cache)}
    run_image = ""
    for rep in range(reps + 1):
        overrides = [f"lr=range({rep * RUNS + 1},{rep * RUNS + RUNS + 1})"]
        timed = run_timed(
            ctx.janitor,
            [
                ORCH,
                "sweep",
                "-p",
                str(root),
                "--store",
                str(store),
                "--jobs",
                "1",
                "--json",
                *overrides,
            ],
            env=env_cache,
            timeout=1800,
        )
        result = json.loads(timed.stdout)
        if any(r["status"] != "succeeded" for r in result["runs"]):
            raise BenchError(f"torch sweep: a run failed: {result['runs']}")
        run_image = result["runs"][0]["image_id"]
        if rep:  # the first sweep also uploads the environment to the store
            per.add(timed.seconds / RUNS)
        for _ in range(2):
            floor_run.add(_docker_run(ctx, pip_tag))
            image_run.add(_docker_run(ctx, run_image))
        log(
            f"torch per run {rep + 1}/{reps + 1}: orch {timed.seconds / RUNS:.2f}s, "
            f"pip image {floor_run.samples[-1]:.2f}s, orch image {image_run.samples[-1]:.2f}s"
        )

    stored = sum(_blob_size(store, layer.diff_id) for layer in env.env_layers)
    return {
        "torch_env_layers": len(env.env_layers),
        "torch_env_uncompressed_bytes": env_bytes,
        "torch_cold_build_s": cold.median,
        "torch_docker_build_s": floor_build.median,
        "torch_cold_build_ratio": ratio(cold.median, floor_build.median),
        "torch_one_package_rebuild_s": rebuild.median,
        "torch_one_package_rebuild_ratio": ratio(rebuild.median, cold.median),
        "torch_one_package_sent_bytes": sent,
        "torch_one_package_changed_layer_bytes": sum(layer.size for layer in changed),
        "torch_per_run_s": per.median,
        "torch_pip_image_run_s": floor_run.median,
        "torch_per_run_ratio": ratio(per.median, floor_run.median),
        "torch_image_run_s": image_run.median,
        "torch_image_run_ratio": ratio(image_run.median, floor_run.median),
        "torch_store_bytes": stored,
        "torch_store_bytes_ratio": ratio(stored, env_bytes),
    }


def _docker_run(ctx: Ctx, image: str) -> float:
    # orch gives each run the project's one CPU (resources.cpus): so does the floor.
    argv = ["docker", "run", "--rm", "--network", "none", "--cpus", "1", *ctx.floor_label(), image]
    return run_timed(ctx.janitor, argv, timeout=600).seconds


def _blob_size(store: Path, diff_id: str) -> int:
    path = store / "blobs" / "sha256" / diff_id.split(":")[1]
    return path.stat().st_size if path.is_file() else 0
