"""orch's own figures: per-run overhead, sweep-size curve, 100-run sweep, config images,
composition of 1,000 points, and the Hydra multirun floor (no containers)."""

from __future__ import annotations

import itertools
import shutil
import statistics
import sys
import textwrap
import time
from typing import Any

from common import ORCH, REPO, BenchError, Stat, log, paired, ratio, remove_images, run_timed
from context import Ctx

_seeds = itertools.count(1)


def _seed() -> int:
    """A config value no earlier sweep of this harness used: new run ids, new images,
    so nothing is skipped and nothing is already loaded."""
    return 1000 + next(_seeds)


def _lr_sweep(count: int) -> list[str]:
    return [f"optimizer.lr=range(0,{count})"] if count > 1 else []


# ------------------------------------------------------------------------ per run


def per_run(ctx: Ctx) -> dict[str, Any]:
    """16-run sweep, --jobs 1, environment cached, fresh store: wall / 16 vs the floor."""
    ctx.warm()
    reps = ctx.reps(4, 2)
    floor = ctx.row("per_run", Stat("floor: docker run --rm BASE true (interleaved)"))
    per = ctx.row("per_run", Stat("orch sweep, 16 runs, --jobs 1: wall / 16"))
    groups = [_floor_group(ctx, floor, 2)]
    for rep in range(reps):
        wall, _ = ctx.sweep([*_lr_sweep(16), f"training_settings.seed={_seed()}"])
        per.add(wall / 16)
        log(f"per_run {rep + 1}/{reps}: {wall:.2f}s for 16 runs ({wall / 16:.3f}s/run)")
        # >= 10 floor samples in all, interleaved with the sweeps
        groups.append(_floor_group(ctx, floor, 3))
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
    figures: dict[str, Any] = {}
    points: list[tuple[int, float]] = []
    for size, reps in sizes.items():
        stat = ctx.cache.get("curve16") if size == 16 else None
        if stat is None:
            stat = ctx.row("curve", Stat(f"orch sweep, {size} run(s), --jobs 1: wall / {size}"))
            for _ in range(reps):
                wall, _ = ctx.sweep([*_lr_sweep(size), f"training_settings.seed={_seed()}"])
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


def sweep100(ctx: Ctx) -> dict[str, Any]:
    """100 trivial runs, --jobs 2: wall / (100 x floor / 2)."""
    ctx.warm()
    reps = ctx.reps(2, 1)
    floor = ctx.row("sweep100", Stat("floor: docker run --rm BASE true (interleaved)"))
    wall_stat = ctx.row("sweep100", Stat("orch sweep, 100 runs, --jobs 2: wall"))
    groups = [_floor_group(ctx, floor, 2 if ctx.quick else 3)]
    for rep in range(reps):
        wall, _ = ctx.sweep([*_lr_sweep(100), f"training_settings.seed={_seed()}"], jobs=2)
        wall_stat.add(wall)
        log(f"sweep100 {rep + 1}/{reps}: {wall:.2f}s")
        groups.append(_floor_group(ctx, floor, 3))
    ideal = None if floor.median is None else 100 * floor.median / 2
    return {
        "sweep100_wall_s": wall_stat.median,
        "sweep100_floor_s": floor.median,
        "sweep100_ratio": ratio(wall_stat.median, ideal),
        "sweep100_ratio_paired": paired([w / 50 for w in wall_stat.samples], groups),
        **_parallel_floor(ctx, wall_stat),
    }


def _parallel_floor(ctx: Ctx, wall_stat: Stat) -> dict[str, Any]:
    """What this machine does with two `docker run --rm BASE true` at a time (40 runs,
    scaled to 100): two containers starting together do not take half the time of one."""
    from concurrent.futures import ThreadPoolExecutor

    count = 20 if ctx.quick else 40
    argv = ["docker", "run", "--rm", *ctx.floor_label(), ctx.base_id, "true"]
    stat = ctx.row("sweep100", Stat(f"{count} x docker run, 2 at a time: wall x {100 / count:g}"))
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: run_timed(ctx.janitor, argv), range(count)))
    stat.add((time.perf_counter() - start) * 100 / count)
    return {
        "sweep100_parallel_floor_s": stat.median,
        "sweep100_ratio_vs_parallel_floor": ratio(wall_stat.median, stat.median),
    }


# ------------------------------------------------------------------------ config images


def config_image(ctx: Ctx) -> dict[str, Any]:
    """Materializing 16 run images (compose excluded) vs docker build of FROM code + COPY."""
    from orchestrator import config as configmod
    from orchestrator import sweep as sweepmod
    from orchestrator.image import builder
    from orchestrator.project import load_project

    ctx.warm()
    client = ctx.client
    project = load_project(ctx.project())
    env = builder.prepare(client, project)
    builder.thin_archive(client, env, []).load(client)  # the code image is cached
    reps = ctx.reps(4, 2)
    builds_per_rep = 2
    orch_stat = ctx.row("config_image", Stat("orch run_image x16 + one thin load: per image"))
    build_stat = ctx.row(
        "config_image", Stat("docker build FROM code image + COPY config: per image")
    )
    tag_repo = f"{ctx.name}-dockerbuild"
    ctx.janitor.add("remove docker-build images", lambda: remove_images(f"reference={tag_repo}"))
    context_dir = ctx.janitor.tempdir("dockerbuild-")
    (context_dir / "Dockerfile").write_text(
        f"FROM {env.code_image.image_id}\nCOPY config.yaml /orch/config.yaml\n"
    )
    built = 0
    per_rep: list[float] = []
    for rep in range(reps):
        seed = _seed()
        args = [*_lr_sweep(16), f"training_settings.seed={seed}"]
        points = sweepmod.compose_points(project, args)
        specs = sweepmod.plan(project, env, points, args).runs
        start = time.perf_counter()
        images = [
            builder.run_image(
                env,
                spec.run_id,
                spec.overrides,
                configmod.to_yaml(spec.config),
                configmod.to_json(spec.config),
            )
            for spec in specs
        ]
        builder.thin_archive(client, env, images).load(client)
        elapsed = time.perf_counter() - start
        orch_stat.add(elapsed / len(images))
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
        log(
            f"config_image {rep + 1}/{reps}: orch {elapsed / len(images) * 1000:.0f} ms/image, "
            f"docker build {build_stat.samples[-1] * 1000:.0f} ms"
        )
    remove_images(f"reference={tag_repo}")
    return {
        "orch_config_image_s": orch_stat.median,
        "docker_build_config_image_s": build_stat.median,
        "config_image_ratio": ratio(orch_stat.median, build_stat.median),
        "config_image_ratio_paired": statistics.median(per_rep) if per_rep else None,
    }


# ------------------------------------------------------------------------ composition

COMPOSE_1K = ["optimizer=SGD,adam", "model=lstm,bi_lstm", "optimizer.lr=range(0,250)"]


def compose1k(ctx: Ctx) -> dict[str, Any]:
    """Composer.compose_many over 1,000 points vs 1,000 hydra compose() calls (50 x 20)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from orchestrator.config import Composer, expand_sweep

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
    sample = points[::20]  # 50 points spread over the whole grid
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
            hydra_stat.add((time.perf_counter() - start) * 20)
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

    from orchestrator import config as configmod
    from orchestrator import container
    from orchestrator import sweep as sweepmod
    from orchestrator.image import builder
    from orchestrator.image.archive import ThinArchive
    from orchestrator.project import load_project

    ctx.warm()
    client = ctx.client
    project = load_project(ctx.project())
    env = builder.prepare(client, project)

    def images(count: int) -> list[Any]:
        args = [*_lr_sweep(count), f"training_settings.seed={_seed()}"]
        specs = sweepmod.plan(project, env, sweepmod.compose_points(project, args), args).runs
        return [
            builder.run_image(
                env, s.run_id, s.overrides, configmod.to_yaml(s.config), configmod.to_json(s.config)
            )
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
    calls = ["create", "start", "wait", "inspect", "logs x2", "get_archive", "remove"]
    stats = {name: ctx.row("breakdown", Stat(f"container.run: {name}")) for name in calls}
    total = ctx.row("breakdown", Stat("container.run: all of the above"))
    floor = ctx.row("breakdown", Stat("floor: docker run --rm BASE true (interleaved)"))
    for index in range(ctx.reps(10, 4)):
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
            container.collect_outputs(made)
            marks.append(time.perf_counter())
        finally:
            made.remove(force=True)
            marks.append(time.perf_counter())
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
            *_lr_sweep(16),
        ]
        dry.add(run_timed(ctx.janitor, argv).seconds)
    figures["breakdown_cli_dry_run_s"] = dry.median
    return figures
