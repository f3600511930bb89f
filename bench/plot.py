"""Draw docs/bench_per_run.png from the harness's figures. Runs under a Python that has
matplotlib (the bench's cached mlflow venv, or a small venv of its own); never orch's.

    python plot.py FIGURES.json OUT.png
"""

from __future__ import annotations

import json
import sys


def main(figures_path: str, out_path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.load(open(figures_path))
    sizes = [1, 4, 16, 64]
    fig, ax = plt.subplots(figsize=(8, 5.6), dpi=120)

    orch = [(n, data.get(f"orch_per_run_{n}_s")) for n in sizes]
    orch = [(n, v) for n, v in orch if v is not None]
    if orch:
        ax.plot(
            [n for n, _ in orch],
            [v for _, v in orch],
            "o-",
            color="#1f77b4",
            lw=2,
            label="orch sweep, --jobs 1 (measured)",
        )
        for n, v in orch:
            ax.annotate(
                f"{v:.2f}s",
                (n, v),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=8,
                color="#1f77b4",
            )

    mlflow = [(n, data.get(f"mlflow_per_run_{n}_s")) for n in (1, 4)]
    mlflow = [(n, v) for n, v in mlflow if v is not None]
    if mlflow:
        ax.plot(
            [n for n, _ in mlflow],
            [v for _, v in mlflow],
            "s-",
            color="#d62728",
            lw=2,
            label="MLflow docker_env --build-image (measured)",
        )
        last = mlflow[-1][1]
        ax.plot(
            [mlflow[-1][0], 16, 64],
            [last, last, last],
            "s--",
            color="#d62728",
            lw=1,
            alpha=0.5,
            mfc="none",
            label="MLflow, extrapolated (one process per run)",
        )
        for n, v in mlflow:
            ax.annotate(
                f"{v:.1f}s",
                (n, v),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=8,
                color="#d62728",
            )

    floor = data.get("curve_floor_s") or data.get("floor_docker_run_s")
    if floor:
        ax.axhline(
            floor,
            color="#555555",
            ls=":",
            lw=1.5,
            label=f"floor: docker run --rm BASE true ({floor:.2f}s)",
        )
    hydra = data.get("hydra_multirun_per_job_s")
    if hydra:
        ax.axhline(
            hydra,
            color="#2ca02c",
            ls="-.",
            lw=1,
            label=f"Hydra multirun, no container ({hydra * 1000:.0f} ms/job)",
        )

    values = [v for _, v in orch + mlflow] + [v for v in (floor, hydra) if v]
    if values:
        ax.set_ylim(min(values) * 0.6, max(values) * 1.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(
        [
            t
            for t in (0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20)
            if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]
        ]
    )
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(n) for n in sizes])
    ax.set_xlabel("runs in the sweep (one at a time)")
    ax.set_ylabel("wall time per run (s, log scale)")
    ax.set_title("Per-run wall time vs sweep size (trivial command: python3 -c pass)", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    machine = data.get("machine", "")
    if isinstance(machine, dict):
        machine = ", ".join(f"{key} {value}" for key, value in machine.items())
    if machine:
        fig.text(0.01, 0.01, machine, fontsize=7, color="#666666")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
