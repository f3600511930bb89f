"""orch's own figures: per-run overhead, sweep-size curve, 100-run sweep, config images,
composition of 1,000 points, and the Hydra multirun floor (no containers)."""

from __future__ import annotations

import itertools
import shutil
import statistics
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from common import ORCH, REPO, BenchError, Stat, log, paired, ratio, remove_images, run_timed
from context import Ctx

_seeds = itertools.count(1)


def new_seed() -> int:
    """A config value no earlier sweep of this harness used: new run ids, new images,
    so nothing is skipped and nothing is already loaded."""
    return 1000 + next(_seeds)


def lr_sweep(count: int) -> list[str]:
    return [f"optimizer.lr=range(0,{count})"] if count > 1 else []


# ------------------------------------------------------------------------ per run


def per_run(ctx: Ctx) -> dict[str, Any]:
    """16-run sweep, --jobs 1, environment cached, fresh store: wall / 16 vs the floor."""
    ctx.warm()
    reps = ctx.reps(4, 2)
    n = ctx.size(16, 16, 4)
    floor = ctx.row("per_run", Stat("floor: docker run --rm BASE true (interleaved)"))
    per = ctx.row("per_run", Stat(f"orch sweep, {n} runs, --jobs 1: wall / {n}"))
    groups = [_floor_group(ctx, floor, 2)]
    for rep in range(reps):
        wall, _ = ctx.sweep([*lr_sweep(n), f"training_settings.seed={new_seed()}"])
        per.add(wall / n)
        log(f"per_run {rep + 1}/{reps}: {wall:.2f}s for {n} runs ({wall / n:.3f}s/run)")
        # >= 10 floor samples in all, interleaved with the sweeps
        groups.append(_floor_group(ctx, floor, ctx.size(3, 3, 1)))
    ctx.cache["curve16"] = per
    return {
        "floor_docker_run_s": floor.median,
        "orch_per_run_s": per.median,
        "per_run_overhead_ratio": ratio(per.median, floor.median),
        "per_run_overhead_ratio_paired": paired(per.samples, groups),
    }


def _floor_group(ctx: Ctx, floor: Stat, count: int) -> list[float]:
    """``count`` more floor samples into ``floor``; returns just these."""
    before = floor.n
    ctx.floor(count, floor)
    return floor.samples[before:]


def curve(ctx: Ctx) -> dict[str, Any]:
    """Per-run wall at sweep sizes 1, 4, 16, 64 (the plot); 16 is per_run's when measured."""
    ctx.warm()
    sizes = {1: ctx.reps(3, 2), 4: ctx.reps(2, 1), 16: ctx.reps(2, 1), 64: ctx.reps(1, 0)}
    if ctx.smoke:
        sizes = {1: 1, 4: 1}
    figures: dict[str, Any] = {}
    points: list[tuple[int, float]] = []
    for size, reps in sizes.items():
        stat = ctx.cache.get("curve16") if size == 16 else None
        if stat is None:
            stat = ctx.row("curve", Stat(f"orch sweep, {size} run(s), --jobs 1: wall / {size}"))
            for _ in range(reps):
                wall, _ = ctx.sweep([*lr_sweep(size), f"training_settings.seed={new_seed()}"])
                stat.add(wall / size)
                log(f"curve: {size} runs in {wall:.2f}s")
        figures[f"orch_per_run_{size}_s"] = stat.median
        points.extend((size, per_run * size) for per_run in stat.samples)
    # wall(N) = fixed + N x marginal, least squares over every sweep measured above
    if len({n for n, _ in points}) >= 2:
        mean_n = statistics.fmean(n for n, _ in points)
        mean_w = statistics.fmean(w for _, w in points)
        slope = sum((n - mean_n) * (w - mean_w) for n, w in points) / sum(
            (n - mean_n) ** 2 for n, _ in points
        )
        figures["orch_marginal_per_run_s"] = slope
        figures["orch_fixed_per_sweep_s"] = mean_w - slope * mean_n
    floor = ctx.cache.get("floor")
    if floor is None or floor.n < 3:
        floor = ctx.floor(5)
    figures["curve_floor_s"] = floor.median
    figures["marginal_per_run_ratio"] = ratio(figures.get("orch_marginal_per_run_s"), floor.median)
    return figures


def _parallel_floor(ctx: Ctx, count: int, jobs: int, into: Stat) -> float:
    """``count`` bare `docker run --rm BASE true`, ``jobs`` at a time: wall, scaled to 100."""
    from concurrent.futures import ThreadPoolExecutor

    argv = ["docker", "run", "--rm", *ctx.floor_label(), ctx.base_id, "true"]
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda _: run_timed(ctx.janitor, argv), range(count)))
    scaled = (time.perf_counter() - start) * 100 / count
    into.add(scaled)
    return scaled


def _sweep_vs_parallel(ctx: Ctx, jobs: int, reps: int) -> tuple[Stat, Stat, float | None]:
    """100-run sweeps at ``--jobs N``, each between two parallel floors (N at a time);
    returns (sweep walls, floors scaled to 100, paired ratio)."""
    count = ctx.size(100, 40, 8)
    runs = ctx.size(100, 100, 8)
    scaled = "" if count == 100 else f", wall x {100 / count:g}"
    wall = ctx.row("sweep100", Stat(f"orch sweep, {runs} runs, --jobs {jobs}: wall"
                                    + ("" if runs == 100 else f" x {100 / runs:g}")))
    floor = ctx.row(
        "sweep100",
        Stat(f"floor: {count} x docker run --rm BASE true, {jobs} at a time{scaled}"),
    )
    floors = [_parallel_floor(ctx, count, jobs, floor)]
    for rep in range(reps):
        seconds, _ = ctx.sweep([*lr_sweep(runs), f"training_settings.seed={new_seed()}"],
                               jobs=jobs)
        seconds *= 100 / runs
        wall.add(seconds)
        floors.append(_parallel_floor(ctx, count, jobs, floor))
        log(
            f"sweep100 --jobs {jobs} {rep + 1}/{reps}: {seconds:.2f}s; parallel floor "
            f"{floors[-2]:.2f}s / {floors[-1]:.2f}s"
        )
    pairs = [w / statistics.fmean(floors[i : i + 2]) for i, w in enumerate(wall.samples)]
    return wall, floor, statistics.median(pairs) if pairs else None


def sweep100(ctx: Ctx) -> dict[str, Any]:
    """100 trivial runs at --jobs 2 and --jobs 4, each against the same number of bare
    `docker run`s 2 (4) at a time, interleaved; the old ratio (against 100 x the serial
    floor / 2) is kept as sweep100_ratio."""
    ctx.warm()
    reps = ctx.reps(2, 1)
    serial = ctx.row("sweep100", Stat("floor: docker run --rm BASE true (serial)"))
    ctx.floor(3, serial)
    wall2, floor2, paired2 = _sweep_vs_parallel(ctx, 2, reps)
    ctx.floor(2, serial)
    wall4, floor4, paired4 = _sweep_vs_parallel(ctx, 4, reps)
    ideal = None if serial.median is None else 100 * serial.median / 2
    return {
        "sweep100_wall_s": wall2.median,
        "sweep100_parallel_floor_s": floor2.median,
        "sweep100_ratio_vs_parallel_floor": ratio(wall2.median, floor2.median),
        "sweep100_ratio_vs_parallel_floor_paired": paired2,
        "sweep100_jobs4_wall_s": wall4.median,
        "sweep100_jobs4_parallel_floor_s": floor4.median,
        "sweep100_jobs4_ratio_vs_parallel_floor": ratio(wall4.median, floor4.median),
        "sweep100_jobs4_ratio_vs_parallel_floor_paired": paired4,
        "sweep100_floor_s": serial.median,
        "sweep100_ratio": ratio(wall2.median, ideal),
    }


# ------------------------------------------------------------------------ config images


def _plan(project: Any, env: Any, args: list[str]) -> list[Any]:
    """The run specs of a sweep of ``args``, as the grid driver plans them: composed, and
    the data inputs the points read pinned first (their digests are part of each run id)."""
    from orchestrator import inputs
    from orchestrator.drivers import grid
    from orchestrator.settings import default_cache_root

    points = grid.compose_points(project, args)
    pinned = inputs.pin(project.inputs, project.root, default_cache_root())
    digests = {name: item.digest for name, item in pinned.items()}
    return list(grid.plan(project, env, points, args, digests).runs)



def _minimal_archive(parent_diff_ids: list[str], salt: str, count: int, repo: str) -> bytes:
    """A hand-made docker-archive of ``count`` images, each the parent's layers plus one
    new layer holding one small file: the least a new image with its own layer can be."""
    import hashlib
    import io
    import json
    import tarfile

    def tar(members: list[tuple[str, bytes]]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                archive.addfile(info, io.BytesIO(data))
        return out.getvalue()

    members: list[tuple[str, bytes]] = []
    manifest = []
    for index in range(count):
        layer = tar([("bench.txt", f"{salt} {index}\n".encode())])
        diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [*parent_diff_ids, diff_id]},
            },
            sort_keys=True,
        ).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        members += [(f"{diff_id[7:]}/layer.tar", layer), (config_name, config)]
        manifest.append(
            {
                "Config": config_name,
                "RepoTags": [f"{repo}:{salt}-{index}"],
                # the parent's layers are on the daemon: listed, not sent
                "Layers": [f"{d[7:]}/layer.tar" for d in [*parent_diff_ids, diff_id]],
            }
        )
    members.append(("manifest.json", json.dumps(manifest).encode()))
    return tar(members)


def _docker_load(client: Any, data: bytes) -> None:
    for message in client.api.load_image(data, quiet=True):
        if isinstance(message, dict) and message.get("error"):
            raise BenchError(f"docker load of the floor archive failed: {message['error']}")


def config_image(ctx: Ctx) -> dict[str, Any]:
    """Materializing 16 run images (compose excluded), against two floors measured in
    the same repeats: the daemon loading 16 hand-made one-file-layer images in one
    request (as orch batches them), and docker build of FROM code + COPY config."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.compose import config as configmod
    from orchestrator.compose.project import load_project
    from orchestrator.image import builder

    ctx.warm()
    client = ctx.client
    project = load_project(ctx.project())
    env = builder.prepare(client, project)
    builder.thin_archive(client, env, []).load(client)  # the code image is cached
    reps = ctx.reps(4, 2)
    builds_per_rep = 2
    per_image = 16
    orch_stat = ctx.row("config_image", Stat("orch run_image x16 + one thin load: per image"))
    load_stat = ctx.row(
        "config_image",
        Stat("floor: docker load, 16 one-file-layer images in one archive: per image"),
    )
    load2_stat = ctx.row(
        "config_image",
        Stat("floor: the same as 2 concurrent archives of 8: per image"),
    )
    build_stat = ctx.row(
        "config_image", Stat("docker build FROM code image + COPY config: per image")
    )
    tag_repo = f"{ctx.name}-dockerbuild"
    floor_repo = f"{ctx.name}-loadfloor"
    ctx.janitor.add("remove docker-build images", lambda: remove_images(f"reference={tag_repo}"))
    ctx.janitor.add("remove load-floor images", lambda: remove_images(f"reference={floor_repo}"))
    context_dir = ctx.janitor.tempdir("dockerbuild-")
    (context_dir / "Dockerfile").write_text(
        f"FROM {env.code_image.image_id}\nCOPY config.yaml /orch/config.yaml\n"
    )
    parent = list(env.code_image.diff_ids)
    built = 0
    per_rep: list[float] = []
    per_rep_load: list[float] = []
    for rep in range(reps):
        seed = new_seed()
        args = [*lr_sweep(per_image), f"training_settings.seed={seed}"]
        specs = _plan(project, env, args)
        start = time.perf_counter()
        images = [
            builder.run_image(env, spec.run_id, spec.overrides, spec.config,
                              command=spec.command)
            for spec in specs
        ]
        builder.load_run_images(client, env, images)
        elapsed = time.perf_counter() - start
        orch_stat.add(elapsed / len(images))
        # the floor, next to it: the archive is made before the clock starts
        data = _minimal_archive(parent, f"{seed}a", per_image, floor_repo)
        start = time.perf_counter()
        _docker_load(client, data)
        load_stat.add((time.perf_counter() - start) / per_image)
        halves = [
            _minimal_archive(parent, f"{seed}b{half}", per_image // 2, floor_repo)
            for half in range(2)
        ]
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda d: _docker_load(client, d), halves))
        load2_stat.add((time.perf_counter() - start) / per_image)
        for index in range(builds_per_rep):
            (context_dir / "config.yaml").write_text(configmod.to_yaml(specs[index].config))
            tag = f"{tag_repo}:{built}"
            timed = run_timed(
                ctx.janitor, ["docker", "build", "-q", "--force-rm", "-t", tag, str(context_dir)]
            )
            build_stat.add(timed.seconds)
            built += 1
        rep_builds = build_stat.samples[-builds_per_rep:]
        per_rep.append(elapsed / len(images) / statistics.median(rep_builds))
        per_rep_load.append(orch_stat.samples[-1] / load_stat.samples[-1])
        log(
            f"config_image {rep + 1}/{reps}: orch {orch_stat.samples[-1] * 1000:.0f} ms/image, "
            f"load floor {load_stat.samples[-1] * 1000:.0f} ms "
            f"(2 in flight {load2_stat.samples[-1] * 1000:.0f} ms), "
            f"docker build {build_stat.samples[-1] * 1000:.0f} ms"
        )
    remove_images(f"reference={tag_repo}")
    remove_images(f"reference={floor_repo}")
    return {
        "orch_config_image_s": orch_stat.median,
        "docker_build_config_image_s": build_stat.median,
        "config_image_ratio": ratio(orch_stat.median, build_stat.median),
        "config_image_ratio_paired": statistics.median(per_rep) if per_rep else None,
        "config_image_load_floor_s": load_stat.median,
        "config_image_load_floor_2x_s": load2_stat.median,
        "config_image_ratio_vs_load_floor": ratio(orch_stat.median, load_stat.median),
        "config_image_ratio_vs_load_floor_paired": (
            statistics.median(per_rep_load) if per_rep_load else None
        ),
        "config_image_ratio_vs_load_floor_2x": ratio(orch_stat.median, load2_stat.median),
    }


# ------------------------------------------------------------------------ composition

COMPOSE_1K = ["optimizer=SGD,adam", "model=lstm,bi_lstm", "optimizer.lr=range(0,250)"]


def compose1k(ctx: Ctx) -> dict[str, Any]:
    """Composer.compose_many over 1,000 points vs 1,000 hydra compose() calls (50 x 20)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from orchestrator.compose.config import Composer, expand_sweep

    config_dir = REPO / "configs"
    reps = ctx.reps(3, 1)
    orch_stat = ctx.row(
        "compose1k", Stat("orch Composer.compose_many, 1,000 points (incl. expand)")
    )
    hydra_stat = ctx.row(
        "compose1k", Stat("hydra compose(), 50 calls x 20 = 1,000 points (scaled)")
    )

    def orch_once() -> int:
        composer = Composer(config_dir, "config")
        return len(composer.compose_many(expand_sweep(COMPOSE_1K, composer)))

    points = expand_sweep(COMPOSE_1K, Composer(config_dir, "config"))
    if len(points) != 1000:
        raise BenchError(f"the 1k sweep expanded to {len(points)} points")
    step = ctx.size(20, 20, 100)
    sample = points[::step]  # 50 points spread over the whole grid (the smoke: 10)
    if not ctx.smoke:
        orch_once()  # warm: imports, Hydra's plugin scan
    for _ in range(reps):  # interleaved: a change of machine load hits both sides
        start = time.perf_counter()
        count = orch_once()
        orch_stat.add(time.perf_counter() - start)
        if count != 1000:
            raise BenchError(f"compose_many returned {count} configs for 1,000 points")
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir), version_base=None, job_name="bench"):
            compose(config_name="config", overrides=list(sample[0]))  # warm
            start = time.perf_counter()
            for point in sample:
                compose(config_name="config", overrides=list(point))
            hydra_stat.add((time.perf_counter() - start) * step)
    GlobalHydra.instance().clear()
    return {
        "compose1k_orch_s": orch_stat.median,
        "compose1k_hydra_s": hydra_stat.median,
        "compose1k_hydra_note": "hydra: 50 compose() calls timed, scaled x20",
        "compose1k_ratio": ratio(orch_stat.median, hydra_stat.median),
    }


# ------------------------------------------------------------------------ Hydra multirun

_HYDRA_APP = """\
import hydra
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    pass


if __name__ == "__main__":
    main()
"""


def hydra_multirun(ctx: Ctx) -> dict[str, Any]:
    """`python -m app -m ...` with Hydra's basic launcher, 16 jobs, no containers."""
    root = ctx.janitor.tempdir("hydra-")
    shutil.copytree(REPO / "configs", root / "configs")
    (root / "bench_hydra_app.py").write_text(textwrap.dedent(_HYDRA_APP))
    reps = ctx.reps(2, 1)
    stat = ctx.row("hydra", Stat("hydra -m (basic launcher, no container), 16 jobs: wall / 16"))
    for rep in range(reps):
        argv = [
            sys.executable,
            "-m",
            "bench_hydra_app",
            "-m",
            "optimizer=SGD,adam",
            "model=lstm,bi_lstm",
            "optimizer.lr=0.1,0.2,0.3,0.4",
            f"hydra.sweep.dir={root / 'multirun' / str(rep)}",
        ]
        timed = run_timed(ctx.janitor, argv, cwd=root)
        if "Launching 16 jobs" not in timed.stdout + timed.stderr:
            raise BenchError(f"hydra multirun did not launch 16 jobs: {timed.stdout[-300:]}")
        stat.add(timed.seconds / 16)
    return {"hydra_multirun_per_job_s": stat.median}


# ------------------------------------------------------------------------ breakdown (opt-in)


def breakdown(ctx: Ctx) -> dict[str, Any]:
    """Where a run's time goes: each Docker API call of container.run on a real run image
    (10 runs, interleaved with the floor), the daemon's cost per loaded image (one
    archive vs two concurrent ones) and the CLI's fixed cost. Not in the default set."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.compose.project import load_project
    from orchestrator.image import builder
    from orchestrator.image.archive import ThinArchive
    from orchestrator.runner import container, outputs

    ctx.warm()
    client = ctx.client
    project = load_project(ctx.project())
    env = builder.prepare(client, project)

    def images(count: int) -> list[Any]:
        args = [*lr_sweep(count), f"training_settings.seed={new_seed()}"]
        specs = _plan(project, env, args)
        return [
            builder.run_image(env, s.run_id, s.overrides, s.config, command=s.command)
            for s in specs
        ]

    def load(batch: list[Any]) -> None:
        archive = ThinArchive()
        for image in batch:
            archive.add_layer(image.diff_id, data=image.layer)
            archive.add_image(image.config, [image.tag])
        archive.load(client)

    figures: dict[str, Any] = {}
    reps = ctx.reps(3, 1)
    one = ctx.row("breakdown", Stat("docker load: 16 run images, one archive: per image"))
    two = ctx.row("breakdown", Stat("docker load: 16 run images, 2 concurrent archives: per image"))
    for _ in range(reps):
        batch = images(16)
        start = time.perf_counter()
        load(batch)
        one.add((time.perf_counter() - start) / 16)
        batch = images(16)
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(load, [batch[:8], batch[8:]]))
        two.add((time.perf_counter() - start) / 16)
    figures["breakdown_load_per_image_s"] = one.median
    figures["breakdown_load_per_image_2x_s"] = two.median

    (image,) = images(1)
    load([image])
    calls = ["create", "start", "wait", "inspect", "logs x2", "outputs", "remove"]
    stats = {name: ctx.row("breakdown", Stat(f"container.run: {name}")) for name in calls}
    total = ctx.row("breakdown", Stat("container.run: all of the above"))
    floor = ctx.row("breakdown", Stat("floor: docker run --rm BASE true (interleaved)"))
    work = ctx.janitor.tempdir("breakdown-")
    for index in range(ctx.reps(10, 4)):
        dirs = container.RunDirs.create(work, f"run-{index}")
        kwargs = container.create_kwargs(
            image_id=image.image_id,
            command=["python3", "-c", "pass"],
            run_id=image.run_id,
            cpus=1,
            memory=None,
            network="none",
            gpu_ids=[],
            env={},
            name=f"{ctx.name}-breakdown-{index}",
            dirs=dirs,
        )
        t0 = time.perf_counter()
        marks = [t0]
        made = client.containers.create(**kwargs)
        marks.append(time.perf_counter())
        try:
            made.start()
            marks.append(time.perf_counter())
            made.wait()
            marks.append(time.perf_counter())
            client.api.inspect_container(made.id)
            marks.append(time.perf_counter())
            made.logs(stdout=True, stderr=False)
            made.logs(stdout=False, stderr=True)
            marks.append(time.perf_counter())
            outputs.collect_outputs(dirs.output)
            marks.append(time.perf_counter())
        finally:
            made.remove(force=True)
            marks.append(time.perf_counter())
            dirs.remove()
        for name, (a, b) in zip(calls, itertools.pairwise(marks), strict=True):
            stats[name].add(b - a)
        total.add(marks[-1] - marks[0])
        ctx.floor(1, floor)
    for name in calls:
        figures[f"breakdown_{name.replace(' ', '_')}_s"] = stats[name].median
    figures["breakdown_container_run_s"] = total.median
    figures["breakdown_floor_s"] = floor.median

    store = ctx.store("dry-run")
    dry = ctx.row("breakdown", Stat("CLI: orch sweep --dry-run, 16 points (imports + compose)"))
    for _ in range(reps):
        argv = [
            ORCH,
            "sweep",
            "-p",
            str(ctx.project()),
            "--store",
            str(store),
            "--dry-run",
            *lr_sweep(16),
        ]
        dry.add(run_timed(ctx.janitor, argv).seconds)
    figures["breakdown_cli_dry_run_s"] = dry.median
    return figures


# ------------------------------------------------------------------------ fixed cost


def fixed_sweep(ctx: Ctx) -> dict[str, Any]:
    """A 1-run sweep of a warm project (its environment and code images built, its store
    holding their blobs; a new config, so a new run image), as a process, against one
    bare `docker run --rm BASE true`, alternating; and the same sweep in-process
    (``ORCH_RESIDENT=0``: no resident driver), alternating with those."""
    ctx.warm()
    store = ctx.store("fixed")
    ctx.sweep([f"training_settings.seed={new_seed()}"], store=store)  # the project's store, warm
    reps = ctx.reps(6, 3)
    floor = ctx.row("fixed_sweep", Stat("floor: docker run --rm BASE true (alternating)"))
    one = ctx.row("fixed_sweep", Stat("orch sweep, 1 run, warm project: wall"))
    alone = ctx.row("fixed_sweep", Stat("the same, ORCH_RESIDENT=0 (in-process)"))
    groups = [_floor_group(ctx, floor, 1)]
    for rep in range(reps):
        wall, _ = ctx.sweep([f"training_settings.seed={new_seed()}"], store=store)
        one.add(wall)
        groups.append(_floor_group(ctx, floor, 1))
        solo, _ = ctx.sweep([f"training_settings.seed={new_seed()}"], store=store,
                            env={"ORCH_RESIDENT": "0"})
        alone.add(solo)
        log(f"fixed_sweep {rep + 1}/{reps}: {wall:.2f}s ({solo:.2f}s in-process) vs docker "
            f"run {groups[-1][0]:.2f}s")
    figures: dict[str, Any] = {
        "fixed_sweep_s": one.median,
        "fixed_sweep_floor_s": floor.median,
        "fixed_sweep_ratio": ratio(one.median, floor.median),
        "fixed_sweep_ratio_paired": paired(one.samples, groups),
        "fixed_sweep_in_process_s": alone.median,
        "fixed_sweep_in_process_ratio": ratio(alone.median, floor.median),
    }
    figures.update(_fixed_breakdown(ctx, store))
    return figures


_TRACE = """\
import json, os, sys, time, functools
marks = {}
def timed(owner, name, label):
    original = getattr(owner, name)
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            marks.setdefault(label, []).append((start - T0, time.perf_counter() - start))
    setattr(owner, name, wrapper)
# As the resident driver does: warm once, then fork a child per command (timed from the fork).
T0 = time.perf_counter()
from orchestrator.resident import server
server.warm()
warmed = time.perf_counter() - T0
import orchestrator.cli
from orchestrator.runner import execute, container, outputs
from orchestrator.drivers import grid as sweep, launcher
from orchestrator.image import builder, archive
from orchestrator.store import runstore as records
from orchestrator.cli import context
timed(sweep, "compose_points", "compose")
timed(builder, "resolve_base", "base image inspect")
timed(builder, "_environment_layers", "environment layers (cached)")
timed(builder, "snapshot", "code snapshot (git tree hash)")
timed(builder, "prepare", "prepare (base + env + code)")
timed(builder, "has_image", "image checks")
timed(archive.ThinArchive, "load", "image load")
timed(records.RunStore, "write_sweep", "store: write sweep")
timed(records.RunStore, "is_complete", "store: is_complete")
timed(launcher.Launcher, "store_environment", "store: environment blobs")
timed(launcher.Launcher, "store_run_image", "store: run image blobs")
timed(records.RunStore, "write_sweep_index", "store: sweep index")
timed(records.RunStore, "commit_run", "store: commit run")
timed(container.Running, "start", "container create + start")
timed(container.Running, "wait", "container wait")
timed(container.Running, "collect", "container logs + remove")
timed(outputs, "collect_outputs", "outputs")
from orchestrator.backends import local
timed(local, "execute", "execute (one run, all of it)")
timed(context.Context, "docker", "docker client")
read, write = os.pipe()
T0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(read)
    try:
        orchestrator.cli.main(sys.argv[1:], standalone_mode=False)
    except SystemExit:
        pass
    marks["command (in the forked child)"] = [(0.0, time.perf_counter() - T0)]
    os.write(write, json.dumps(marks).encode())
    os._exit(0)
os.close(write)
chunks = []
while chunk := os.read(read, 1 << 16):
    chunks.append(chunk)
os.waitpid(pid, 0)
marks = json.loads(b"".join(chunks))
marks["driver warm-up (once per driver)"] = [(0.0, warmed)]
print(json.dumps(marks), file=sys.stderr)
"""


def _fixed_breakdown(ctx: Ctx, store: Path) -> dict[str, Any]:
    """Where a 1-run sweep's time goes: the command in a child forked from a warmed process,
    as the resident driver runs it, with timers around its stages (median over repeats; the
    stages overlap where orch overlaps them); and the hand-off, ``orch --version`` through
    the driver (the console script's start, its request, the fork, the exit status)."""
    import json

    reps = ctx.reps(3, 2)
    stages: dict[str, list[float]] = {}
    for _ in range(reps):
        stages.setdefault("hand-off to the driver (orch --version)", []).append(
            run_timed(ctx.janitor, [ORCH, "--version"]).seconds
        )
        argv = [
            sys.executable,
            "-c",
            _TRACE,
            "sweep",
            "-p",
            str(ctx.project()),
            "--store",
            str(store),
            "--json",
            f"training_settings.seed={new_seed()}",
        ]
        timed = run_timed(ctx.janitor, argv)
        marks = json.loads(timed.stderr.strip().splitlines()[-1])
        for label, calls in marks.items():
            stages.setdefault(label, []).append(sum(d for _, d in calls))
        stages.setdefault("process wall (warm-up, then the command)", []).append(timed.seconds)
    figures = {}
    for label, values in stages.items():
        stat = ctx.row("fixed_sweep", Stat(f"1-run sweep, in one process: {label}"))
        for value in values:
            stat.add(value)
        key = "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")
        while "__" in key:
            key = key.replace("__", "_")
        figures[f"fixed_sweep_stage_{key}_s"] = stat.median
    return figures
