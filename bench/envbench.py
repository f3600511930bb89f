"""What the environment sections share (``torch``: a small torch lock, ``project``: a real
project's lock): one locked environment built and run by orch against the conventional
way, a ``docker build`` that pip-installs the same wheels, every ratio side by side in
this run.

For a :class:`Case` (a lock, a tiny training script, one small package to change),
:func:`measure` gives, under the case's key prefix ``P``:

- ``P_cold_build_ratio``: orch's environment from a cold layer cache (wheels already
  downloaded, sdists already built) built and loaded into the daemon / ``docker build
  --no-cache`` of ``FROM base; COPY wheels; RUN pip install --no-index --require-hashes``
  of the very wheel files orch installs (an sdist's wheel as orch built it, hashed as
  such);
- ``P_one_package_rebuild_ratio``: the same after changing one small package / orch's own
  cold build; the bytes the thin archives carry to the daemon for that change beside it;
- ``P_per_run_ratio``: per-run wall of the tiny training run, ``orch sweep`` of
  ``case.runs`` runs with ``--jobs 1`` / ``docker run --rm`` of the pip-built image
  (interleaved); ``P_image_run_ratio``: ``docker run`` of orch's run image / the pip-built one;
- ``P_store_bytes_ratio``: bytes of the environment's layers in a directory store after
  one sweep / their uncompressed size;
- ``P_cold_stage_*``, ``P_rebuild_stage_*``: where the last cold build's and the
  one-package rebuild's time went (seconds summed over calls, measured in process; the
  stages overlap where orch overlaps them); every build's stages are logged.

With ``ctx.smoke`` a case runs on :data:`SMOKE_LOCK` (two pure-Python wheels) and a trivial
script, under its own key prefix: the machinery is exercised, not the stack.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common import (
    BENCH_CACHE,
    GIT_ENV,
    ORCH,
    REPO,
    BenchError,
    Stat,
    loadavg,
    log,
    ratio,
    remove_images,
    run_timed,
)
from context import Ctx

#: The base image's interpreter, for which the locks are read and the wheels chosen.
PYTHON = "3.11.2"
SMOKE_LOCK = Path(__file__).resolve().parent / "smoke" / "requirements.lock"
SMOKE_TRAIN = """\
import json, os
import mdurl, typing_extensions
out = os.environ.get("ORCH_OUTPUT", "/tmp")
json.dump({"loss": 0.5}, open(os.path.join(out, "metrics.json"), "w"))
"""
#: typing-extensions 4.16.0 -> 4.15.0: a small package every case's lock has.
TYPING_EXTENSIONS_4_15 = (
    "typing-extensions==4.15.0 "
    "--hash=sha256:f0fa19c6845758ab08074a0cfa8b7aecb71c999ca73d62883bc25cc018c4e548\n"
)
DOCKERFILE = """\
FROM {base}
COPY wheels /wheels
COPY requirements.txt /requirements.txt
RUN python3 /wheels/{pip}/pip install --no-index --find-links /wheels --require-hashes \\
    --break-system-packages --no-warn-script-location --disable-pip-version-check \\
    -r /requirements.txt
COPY train.py /app/train.py
WORKDIR /app
USER 65534:65534
ENV HOME=/tmp
CMD ["python3", "train.py"]
"""


@dataclass(frozen=True)
class Case:
    """One environment to measure."""

    prefix: str  # the section's name and its keys' prefix
    lock: Path
    train: str  # the run's script (``python3 train.py``), writes metrics.json
    change: str  # the package the one-package rebuild changes (its name in the lock)
    change_lines: str  # its new requirement lines
    runs: int = 6  # runs per measured sweep
    smoke: bool = False

    def for_smoke(self) -> Case:
        return replace(self, lock=SMOKE_LOCK, train=SMOKE_TRAIN, change="typing-extensions",
                       change_lines=TYPING_EXTENSIONS_4_15, runs=2, smoke=True)


def changed_lock(case: Case) -> str:
    """The case's lock with its one package changed (the old entry's comment lines stay)."""
    text = case.lock.read_text()
    start = text.index(f"\n{case.change}==") + 1
    end = text.index("\n", text.index("# via", start)) + 1
    return text[:start] + case.change_lines + text[end:]


def wheelhouse(ctx: Ctx, case: Case) -> tuple[Path, list[Path], Path]:
    """The lock's wheels (and the changed package's, and pip's own) fetched once into a
    persistent bench cache, an sdist built into its wheel the way orch builds it:
    downloads and sdist builds are not what the section measures."""
    sys.path.insert(0, str(REPO))
    from orchestrator.image import wheels
    from orchestrator.image.sdist import SdistBuilder

    store = BENCH_CACHE / "torch-wheels"  # content-addressed: every case shares it
    sdists = SdistBuilder(ctx.client, ctx.base_id)
    files = wheels.ensure_wheels(
        wheels.read_lock(case.lock, PYTHON).requirements, store, PYTHON, sdists=sdists
    )
    change = ctx.janitor.tempdir(f"{case.prefix}-change-") / "requirements.lock"
    change.write_text(changed_lock(case))
    wheels.ensure_wheels(
        wheels.read_lock(change, PYTHON).requirements, store, PYTHON, sdists=sdists
    )
    pip_dir = BENCH_CACHE / "torch-pip"
    if not list(pip_dir.glob("pip-*.whl")):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "pip", "-d", str(pip_dir)],
            check=True, capture_output=True,
        )
    return store, files, sorted(pip_dir.glob("pip-*.whl"))[-1]


def hashed_requirements(files: list[Path]) -> str:
    """``name==version --hash=...`` of exactly these wheel files: what pip must install."""
    from packaging.utils import parse_wheel_filename

    lines = []
    for wheel in files:
        name, version, _, _ = parse_wheel_filename(wheel.name)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"{name}=={version} --hash=sha256:{sha}\n")
    return "".join(sorted(lines))


def _project(ctx: Ctx, case: Case, name: str) -> Path:
    root = ctx.janitor.tempdir(f"{case.prefix}-project-") / name
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "config.yaml").write_text("lr: 0.05\n")
    (root / "train.py").write_text(case.train)
    shutil.copy(case.lock, root / "requirements.lock")
    data = {
        "name": name,
        "base_image": ctx.base_id,
        "command": ["python3", "train.py"],
        "requirements": "requirements.lock",
        "network": "none",
        "resources": {"cpus": 1, "gpus": 0},
    }
    return ctx.commit_project(root, data)


def _commit(root: Path) -> None:
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", "bench"], check=True, env=env)


def _fresh_cache(ctx: Ctx, wheel_store: Path) -> Path:
    """An orch cache with no layers but the wheelhouse already there (hard links)."""
    root = ctx.janitor.tempdir("env-cache-")
    shutil.copytree(wheel_store, root / "wheels", copy_function=os.link)
    return root


#: What a cold build's stages are, for the trace: (module, attribute, label).
_STAGES = (
    ("orchestrator.image.builder", "resolve_base", "base image inspect"),
    ("orchestrator.image.interpreter", "probe", "interpreter probe"),
    ("orchestrator.image.wheels", "ensure_wheels", "wheels from the cache"),
    ("orchestrator.image.closure", "check_closure", "lock closure check"),
    ("orchestrator.image.envinstall", "install_group", "unpack wheels (installer)"),
    ("orchestrator.image.bytecode", "compile_groups", "compile bytecode (container)"),
    ("orchestrator.image.envbuild", "write_layer_file", "write layer tars"),
    ("orchestrator.image.builder", "snapshot", "code snapshot"),
    ("orchestrator.image.archive:ThinArchive", "load", "docker load (thin archives)"),
)


@contextmanager
def _traced() -> Iterator[dict[str, list[float]]]:
    """Timers around the build's stages (any thread): label -> durations of its calls."""
    import importlib

    marks: dict[str, list[float]] = {}
    lock = threading.Lock()
    undo = []
    for where, name, label in _STAGES:
        module_name, _, cls = where.partition(":")
        owner: Any = importlib.import_module(module_name)
        if cls:
            owner = getattr(owner, cls)
        original = getattr(owner, name)  # AttributeError: a stage was renamed

        def wrapper(*args: Any, _f: Any = original, _l: str = label, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                with lock:
                    marks.setdefault(_l, []).append(time.perf_counter() - start)

        setattr(owner, name, functools.wraps(original)(wrapper))
        undo.append((owner, name, original))
    try:
        yield marks
    finally:
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)


def _orch_build(ctx: Ctx, root: Path, cache: Path) -> tuple[float, int, Any, dict[str, Any]]:
    """Build the environment and code images and load them: (seconds, bytes sent, env,
    the stage trace).

    The bytes sent are those of every layer in every archive loaded, the ones the build
    loads while it goes (see orchestrator.image.preload) included."""
    from orchestrator.compose.project import load_project
    from orchestrator.image import builder
    from orchestrator.image.archive import ThinArchive

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
        with _traced() as marks:
            start = time.perf_counter()
            env = builder.prepare(ctx.client, load_project(root), cache_root=cache)
            builder.thin_archive(ctx.client, env, []).load(ctx.client)
            seconds = time.perf_counter() - start
    finally:
        ThinArchive.load = load  # type: ignore[method-assign]
    trace: dict[str, Any] = {label: sum(values) for label, values in marks.items()}
    trace["docker loads"] = len(marks.get("docker load (thin archives)", []))
    return seconds, sent[0], env, trace


def _drop_images(env: Any) -> None:
    """Remove the environment and code images, so their layers leave the daemon."""
    for image in (env.code_image.image_id, env.env_image.image_id):
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)


def _docker_build(ctx: Ctx, context: Path, tag: str) -> float:
    argv = ["docker", "build", "--no-cache", "-q", "-t", tag, str(context)]
    return run_timed(ctx.janitor, argv, timeout=1800).seconds


def _docker_run(ctx: Ctx, image: str) -> float:
    # orch gives each run the project's one CPU (resources.cpus): so does the floor.
    argv = ["docker", "run", "--rm", "--network", "none", "--cpus", "1", *ctx.floor_label(), image]
    return run_timed(ctx.janitor, argv, timeout=600).seconds


def _blob_size(store: Path, diff_id: str) -> int:
    path = store / "blobs" / "sha256" / diff_id.split(":")[1]
    return path.stat().st_size if path.is_file() else 0


def _key(label: str) -> str:
    key = "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")
    while "__" in key:
        key = key.replace("__", "_")
    return key


def measure(ctx: Ctx, case: Case) -> dict[str, Any]:
    """Every figure of ``case`` (see the module's docstring), keys prefixed ``case.prefix``."""
    if ctx.smoke and not case.smoke:
        case = case.for_smoke()
    p = case.prefix
    log(f"{p}: wheelhouse (downloads once into the bench cache)")
    wheel_store, files, pip_wheel = wheelhouse(ctx, case)
    reps = ctx.reps(2, 1)

    # The conventional image's build context: the same wheels, pip, train.py.
    context = ctx.janitor.tempdir(f"{p}-docker-")
    (context / "wheels").mkdir()
    for wheel in [*files, pip_wheel]:
        os.link(wheel, context / "wheels" / wheel.name)
    (context / "requirements.txt").write_text(hashed_requirements(files))
    (context / "train.py").write_text(case.train)
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=ctx.base_id, pip=pip_wheel.name))
    pip_tag = f"orch-bench-pip-{p}:{ctx.name}"
    ctx.janitor.add(f"remove the {p} pip-built image",
                    lambda: remove_images(f"reference={pip_tag}"))

    cold = ctx.row(p, Stat("orch cold environment build + load (wheels cached)"))
    floor_build = ctx.row(p, Stat("floor: docker build --no-cache, pip install"))
    root = _project(ctx, case, f"{ctx.name}-{p}")
    env = None
    trace: dict[str, Any] = {}
    cache = wheel_store
    for rep in range(reps):
        if env is not None:
            _drop_images(env)
        cache = _fresh_cache(ctx, wheel_store)
        seconds, _, env, trace = _orch_build(ctx, root, cache)
        cold.add(seconds)
        floor_build.add(_docker_build(ctx, context, pip_tag))
        log(f"{p} cold build {rep + 1}/{reps}: orch {seconds:.1f}s, "
            f"docker build {floor_build.samples[-1]:.1f}s (load average {loadavg():.1f}); "
            "stages: " + _stages(trace))
    assert env is not None
    env_bytes = sum(layer.size for layer in env.env_layers)

    # One small package changed, in the cache the last cold build filled.
    before = env
    (root / "requirements.lock").write_text(changed_lock(case))
    _commit(root)
    rebuild = ctx.row(p, Stat("orch rebuild after one small package changed"))
    seconds, sent, after, rebuild_trace = _orch_build(ctx, root, cache)
    rebuild.add(seconds)
    changed = [layer for layer in after.env_layers if layer not in before.env_layers]
    log(f"{p} one-package rebuild: {seconds:.2f}s, {sent} bytes sent, "
        f"{len(changed)} layer(s) new; stages: " + _stages(rebuild_trace))
    shutil.copy(case.lock, root / "requirements.lock")
    _commit(root)

    # Per run: orch sweep vs docker run of the pip-built image, interleaved.
    runs = case.runs
    per = ctx.row(p, Stat(f"orch sweep, {runs} runs, --jobs 1: wall / {runs}"))
    floor_run = ctx.row(p, Stat("floor: docker run --rm pip-built image (interleaved)"))
    image_run = ctx.row(p, Stat("docker run --rm orch run image"))
    store = ctx.store(p)
    for rep in range(reps + 1):
        overrides = [f"lr=range({rep * runs + 1},{rep * runs + runs + 1})"]
        argv = [ORCH, "sweep", "-p", str(root), "--store", str(store), "--jobs", "1", "--json",
                *overrides]
        timed = run_timed(ctx.janitor, argv, env={"ORCH_CACHE": str(cache)}, timeout=1800)
        result = json.loads(timed.stdout)
        if any(r["status"] != "succeeded" for r in result["runs"]):
            raise BenchError(f"{p} sweep: a run failed: {result['runs']}")
        run_image = result["runs"][0]["image_id"]
        if rep:  # the first sweep also uploads the environment to the store
            per.add(timed.seconds / runs)
        for _ in range(ctx.size(2, 2, 1)):
            floor_run.add(_docker_run(ctx, pip_tag))
            image_run.add(_docker_run(ctx, run_image))
        log(f"{p} per run {rep + 1}/{reps + 1}: orch {timed.seconds / runs:.2f}s, "
            f"pip image {floor_run.samples[-1]:.2f}s, orch image {image_run.samples[-1]:.2f}s")

    stored = sum(_blob_size(store, layer.diff_id) for layer in env.env_layers)
    figures: dict[str, Any] = {
        f"{p}_packages": len(files),
        f"{p}_env_layers": len(env.env_layers),
        f"{p}_env_uncompressed_bytes": env_bytes,
        f"{p}_cold_build_s": cold.median,
        f"{p}_docker_build_s": floor_build.median,
        f"{p}_cold_build_ratio": ratio(cold.median, floor_build.median),
        f"{p}_one_package_rebuild_s": rebuild.median,
        f"{p}_one_package_rebuild_ratio": ratio(rebuild.median, cold.median),
        f"{p}_one_package_sent_bytes": sent,
        f"{p}_one_package_changed_layer_bytes": sum(layer.size for layer in changed),
        f"{p}_per_run_s": per.median,
        f"{p}_pip_image_run_s": floor_run.median,
        f"{p}_per_run_ratio": ratio(per.median, floor_run.median),
        f"{p}_image_run_s": image_run.median,
        f"{p}_image_run_ratio": ratio(image_run.median, floor_run.median),
        f"{p}_store_bytes": stored,
        f"{p}_store_bytes_ratio": ratio(stored, env_bytes),
    }
    for name, stages in (("cold", trace), ("rebuild", rebuild_trace)):
        for label, value in stages.items():
            suffix = "" if label == "docker loads" else "_s"
            figures[f"{p}_{name}_stage_{_key(label)}{suffix}"] = value
    return figures


def _stages(trace: dict[str, Any]) -> str:
    return ", ".join(f"{label} {value:.2f}s" if isinstance(value, float) else f"{label} {value}"
                     for label, value in trace.items())
