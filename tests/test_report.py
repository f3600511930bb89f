"""The HTML report: self-contained, escaped, and rendered by a real browser."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.results import report
from orchestrator.results.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
PAYLOAD = "<script>alert('pwned')</script>"
ATTRIBUTE_PAYLOAD = '"><img src=x onerror=alert(1)>'


def _noise(*parts: Any) -> float:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return digest[0] / 255 - 0.5


def sweep_and_records() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Eight runs of model x optimizer x lr, one of them failed; deterministic metrics."""
    records = []
    for i, (model, optimizer, lr) in enumerate(
        itertools.product(["lstm", "bi_lstm"], ["SGD", "adam"], [0.01, 0.001])
    ):
        run_id = hashlib.sha256(f"run{i}".encode()).hexdigest()[:12]
        loss = (
            0.52
            - (0.07 if model == "bi_lstm" else 0)
            - (0.11 if optimizer == "adam" else 0)
            + (0.06 if lr == 0.001 and optimizer == "SGD" else -0.01)
            + 0.04 * _noise(i, "loss")
        )
        accuracy = 0.93 - 0.55 * loss + 0.05 * _noise(i, "acc")
        record: dict[str, Any] = {
            "schema": 1,
            "run_id": run_id,
            "sweep_id": "9b1c0e2d4f6a",
            "project": "demo",
            "status": "succeeded",
            "reason": None,
            "overrides": [f"model={model}", f"optimizer={optimizer}", f"optimizer.lr={lr}"],
            "config": {
                "model": {"name": model, "hidden": 128 if model == "lstm" else 256},
                "optimizer": {"name": optimizer, "lr": lr},
                "data": {"batch_size": 32},
                "seed": 0,
            },
            "image_id": "sha256:" + hashlib.sha256(run_id.encode()).hexdigest(),
            "metrics": {"loss": round(loss, 4), "accuracy": round(accuracy, 4)},
            "duration_s": round(41 + 23 * _noise(i, "t") + (30 if model == "bi_lstm" else 0), 1),
        }
        if i == 6:
            record.update(status="failed", reason="killed: out of memory", metrics={})
        records.append(record)
    sweep = {
        "schema": 1,
        "sweep_id": "9b1c0e2d4f6a",
        "project": "demo",
        "created_at": "2026-11-27T23:00:00.123Z",
        "args": ["model=lstm,bi_lstm", "optimizer=SGD,adam", "optimizer.lr=0.01,0.001"],
        "runs": [{"run_id": r["run_id"], "overrides": r["overrides"]} for r in records],
    }
    return sweep, records


def hostile() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The same sweep with markup in config values, metric names and sweep fields."""
    sweep, records = sweep_and_records()
    records[1]["config"]["model"]["note"] = PAYLOAD
    records[2]["config"]["model"]["note"] = ATTRIBUTE_PAYLOAD
    records[3]["metrics"]["<b>bold</b>"] = 1.0
    records[4]["reason"] = PAYLOAD
    records[4]["status"] = "failed"
    sweep["project"] = PAYLOAD
    sweep["args"] = [*sweep["args"], f"+model.note={PAYLOAD}"]
    return sweep, records


@pytest.fixture
def html(tmp_path: Path) -> str:
    sweep, records = sweep_and_records()
    path = tmp_path / "report.html"
    write_report(sweep, records, path)
    return path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- content


def test_report_has_header_table_plots_and_parallel_coordinates(html: str) -> None:
    sweep, records = sweep_and_records()
    assert html.startswith("<!DOCTYPE html>")
    assert "9b1c0e2d4f6a" in html and "optimizer=SGD,adam" in html
    assert "killed: out of memory" in html
    for record in records:
        assert record["run_id"] in html
    # One chart per (metric, swept parameter), plus the parallel coordinates.
    assert html.count('class="chart"') == 2 * 4
    assert html.count('class="parallel"') == 1
    for key in ("model.name", "model.hidden", "optimizer.name", "optimizer.lr"):
        assert f"<th>{key}</th>" in html
    assert "<th>data.batch_size</th>" not in html  # constant: not swept
    assert "objective: loss (lower is better)" in html
    assert "★" in html


def test_report_marks_the_lowest_loss_as_best(html: str) -> None:
    _, records = sweep_and_records()
    succeeded = [r for r in records if r["status"] == "succeeded"]
    best = min(succeeded, key=lambda r: r["metrics"]["loss"])
    assert re.search(
        rf'<tr class="best"><td class="mark"[^>]*>★</td><td class="mono"[^>]*>'
        rf"{best['run_id']}</td>",
        html,
    )


def test_report_uses_the_given_objective(tmp_path: Path) -> None:
    sweep, records = sweep_and_records()
    path = tmp_path / "r.html"
    write_report(sweep, records, path, sort="-accuracy")
    assert "objective: accuracy (higher is better)" in path.read_text()


def test_report_fetches_nothing(html: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", html, re.I)
    assert "@import" not in html
    assert "<link" not in html
    assert "<img" not in html
    assert "<iframe" not in html
    # Only the inline sorting script, with no src.
    assert html.count("<script") == 1 and "<script>" in html


def test_report_escapes_everything_from_records(tmp_path: Path) -> None:
    sweep, records = hostile()
    path = tmp_path / "report.html"
    write_report(sweep, records, path)
    text = path.read_text(encoding="utf-8")
    assert PAYLOAD not in text
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in text
    assert "<img" not in text
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert text.count("<script") == 1  # ours


def test_report_of_an_unfinished_sweep(tmp_path: Path) -> None:
    sweep, _ = sweep_and_records()
    path = tmp_path / "report.html"
    write_report(sweep, [], path)
    text = path.read_text()
    assert "No run of this sweep has finished yet." in text
    assert "not finished" in text
    assert 'class="chart"' not in text


def test_report_of_a_single_configuration(tmp_path: Path) -> None:
    sweep, records = sweep_and_records()
    path = tmp_path / "report.html"
    write_report(sweep, records[:1], path)
    text = path.read_text()
    assert "nothing to plot against" in text
    assert records[0]["run_id"] in text


def test_report_with_only_failed_runs(tmp_path: Path) -> None:
    sweep, records = sweep_and_records()
    failed = [r | {"status": "failed", "reason": "exit code 1", "metrics": {}} for r in records]
    path = tmp_path / "report.html"
    write_report(sweep, failed, path)
    text = path.read_text()
    assert text.count(">failed: exit code 1</td>") == len(failed)
    assert 'class="chart"' not in text  # no metric: nothing to plot


def test_report_log_scale_for_geometric_parameters(tmp_path: Path) -> None:
    sweep, records = sweep_and_records()
    for index, record in enumerate(records):
        record["config"]["optimizer"]["lr"] = [0.1, 0.01, 0.001, 0.0001][index % 4]
    path = tmp_path / "report.html"
    write_report(sweep, records, path)
    assert "log scale" in path.read_text()


def test_missing_template_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "TEMPLATE_DIR", tmp_path / "nowhere")
    sweep, records = sweep_and_records()
    with pytest.raises(OrchestratorError, match="report template .* is missing"):
        write_report(sweep, records, tmp_path / "r.html")


def test_unwritable_output_is_a_usage_error(tmp_path: Path) -> None:
    sweep, records = sweep_and_records()
    with pytest.raises(UsageError, match="cannot write report to"):
        write_report(sweep, records, tmp_path / "no" / "such" / "dir" / "r.html")


def test_report_is_deterministic(tmp_path: Path) -> None:
    sweep, records = sweep_and_records()
    write_report(sweep, records, tmp_path / "1.html")
    write_report(sweep, records, tmp_path / "2.html")
    assert (tmp_path / "1.html").read_bytes() == (tmp_path / "2.html").read_bytes()


# --------------------------------------------------------------------------- browser


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit, non-interlaced RGB(A) PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind_ = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind_ == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind_ == 2 and not any(line):  # Up, unchanged row
            line = bytearray(previous)
        elif kind_ == 2:  # Up
            line = bytearray((x + p) & 255 for x, p in zip(line, previous, strict=True))
        elif kind_ == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 255
        elif kind_ == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = previous[i], (previous[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
        previous = line
    return width, height, rows


def screenshot(html_path: Path, png_path: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            f"--user-data-dir={profile}",
            f"--screenshot={png_path}",
            "--window-size=1280,1600",
            html_path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    sweep, records = hostile()
    html_path = tmp_path / "report.html"
    write_report(sweep, records, html_path)
    png_path = tmp_path / "report.png"
    result = screenshot(html_path, png_path, tmp_path / "profile")
    assert png_path.exists(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    # A blank 1280x1600 page compresses to about 10 KB.
    assert png_path.stat().st_size > 60_000
    # The inline script parsed and ran without throwing, and the payload never ran.
    assert "Uncaught" not in result.stderr, result.stderr[-2000:]
    assert "pwned" not in result.stderr

    width, height, rows = decode_png(png_path.read_bytes())
    assert (width, height) == (1280, 1600)
    colours: set[bytes] = set()
    dark = 0
    total = 0
    for row in rows[::2]:
        for i in range(0, len(row), 6):
            pixel = row[i : i + 3]
            colours.add(pixel)
            total += 1
            if sum(pixel) < 3 * 140:
                dark += 1
    # Text, coloured status dots, amber best-run marks and plot points: many colours.
    assert len(colours) > 100, len(colours)
    assert dark / total > 0.005, dark / total


# --------------------------------------------------------------------------- learning curves


def curves_of(records: list[dict[str, Any]], steps: int = 30) -> dict[str, Any]:
    """A metrics.jsonl per run (train_loss every step, test_accuracy every 5th), parsed."""
    from orchestrator.results.curves import parse_curve

    curves = {}
    for index, record in enumerate(records):
        lr = record["config"]["optimizer"]["lr"]
        lines = []
        for step in range(1, steps + 1):
            line: dict[str, Any] = {"step": step, "epoch": step,
                                    "train_loss": (1 + index / 4) * math.exp(-lr * 40 * step)}
            if step % 5 == 0:
                line["test_accuracy"] = 0.5 + 0.4 * (1 - math.exp(-lr * 30 * step))
            lines.append(json.dumps(line))
        curves[record["run_id"]] = parse_curve(("\n".join(lines) + "\nnot json\n").encode())
    return curves


def curve_paths(html: str) -> dict[str, list[str]]:
    """The run ids of the curve paths in each curve chart, by metric."""
    charts = re.findall(r'<svg class="curves"[^>]*data-metric="([^"]+)">(.*?)</svg>', html, re.S)
    return {
        metric: re.findall(r'<path d="[^"]*" class="curve(?: best| failed)?" stroke="#[0-9a-f]{6}"'
                           r' data-run="([0-9a-f]+)">', body)
        for metric, body in charts
    }


def test_report_draws_a_curve_per_run_and_step_metric(tmp_path: Path) -> None:
    sweep, records = sweep_and_records()
    path = tmp_path / "r.html"
    write_report(sweep, records, path, "loss", curves=curves_of(records))
    text = path.read_text()
    paths = curve_paths(text)
    assert list(paths) == ["test_accuracy", "train_loss"]  # epoch is bookkeeping
    for metric, run_ids in paths.items():
        assert sorted(run_ids) == sorted(r["run_id"] for r in records), metric
    assert "Learning curves" in text
    assert "colour: <b>model.hidden</b>" in text  # the first swept key, by default
    best = min((r for r in records if r["status"] == "succeeded"),
               key=lambda r: r["metrics"]["loss"])
    assert text.count('class="curve-halo"') == 2  # the best run, in each chart
    assert re.search(rf'class="curve best" stroke="#[0-9a-f]{{6}}" data-run="{best["run_id"]}"',
                     text)
    assert text.count('class="curve failed"') == 2  # the failed run, dashed
    assert "guessed from the metric names" not in text


def test_report_colours_curves_by_the_chosen_key(tmp_path: Path) -> None:
    sweep, records = sweep_and_records()
    path = tmp_path / "r.html"
    write_report(sweep, records, path, curves=curves_of(records), color_by="optimizer.name")
    text = path.read_text()
    assert "colour: <b>optimizer.name</b>" in text
    legend = re.search(r'<div class="curve-legend">(.*?)</div>', text, re.S)
    assert legend and "SGD" in legend.group(1) and "adam" in legend.group(1)
    by_value: dict[str, set[str]] = {}
    chart = re.search(r'<svg class="curves".*?</svg>', text, re.S)
    assert chart
    for colour, run_id in re.findall(r'class="curve[^"]*" stroke="(#[0-9a-f]{6})" '
                                     r'data-run="([0-9a-f]+)"', chart.group(0)):
        (record,) = [r for r in records if r["run_id"] == run_id]
        by_value.setdefault(record["config"]["optimizer"]["name"], set()).add(colour)
    assert all(len(colours) == 1 for colours in by_value.values())
    assert by_value["SGD"] != by_value["adam"]
    with pytest.raises(UsageError, match=r"unknown config key 'nope' for --color-by"):
        write_report(sweep, records, path, curves=curves_of(records), color_by="nope")


def test_report_says_when_the_objective_was_guessed(html: str) -> None:
    assert "guessed from the metric names; set it with --objective" in html


def test_objective_names_the_metric_and_its_direction() -> None:
    from orchestrator.results.objective import parse_objective

    _, records = sweep_and_records()
    assert parse_objective("loss:min", records) == "loss"
    assert parse_objective("loss:max", records) == "-loss"
    assert parse_objective("accuracy", records) == "-accuracy"
    assert parse_objective("loss", records) == "loss"
    with pytest.raises(UsageError, match="unknown metric 'los' for --objective"):
        parse_objective("los", records)
    with pytest.raises(UsageError, match="expected METRIC, METRIC:min or METRIC:max"):
        parse_objective("loss:lowest", records)


def test_long_curves_are_downsampled_keeping_their_extremes() -> None:
    from orchestrator.results.curves import downsample, parse_curve

    lines = [json.dumps({"loss": 1.0 if i != 7777 else 50.0}) for i in range(100_000)]
    series = parse_curve("\n".join(lines).encode())["loss"]
    assert len(series[0]) == 100_000 and series[0][0] == 1.0  # no step: the line number
    points = downsample(series)
    assert len(points) <= 500
    assert (7778.0, 50.0) in points and points[0][0] == 1.0 and points[-1][0] == 100_000.0


def test_a_sweep_without_step_metrics_has_no_curves(html: str) -> None:
    assert "Learning curves" not in html and 'class="curves"' not in html


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)")
def test_report_curves_render_in_headless_chromium(tmp_path: Path) -> None:
    sweep, records = sweep_and_records()
    html_path = tmp_path / "report.html"
    write_report(sweep, records, html_path, "-accuracy", curves=curves_of(records),
                 color_by="optimizer.lr")
    png_path = tmp_path / "report.png"
    result = screenshot(html_path, png_path, tmp_path / "profile")
    assert png_path.exists(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    assert "Uncaught" not in result.stderr, result.stderr[-2000:]
    _, _, rows = decode_png(png_path.read_bytes())
    # The curves card sits just below the summary and best-run cards: the amber halo of the
    # best run's curve and the two lr colours are drawn there.
    amber = sum(1 for row in rows[300:1000] for i in range(0, len(row), 3)
                if row[i] > 220 and 140 < row[i + 1] < 200 and row[i + 2] < 90)
    assert amber > 200, amber


STEP_SCRIPT = """
import json, os
config = json.load(open("/orch/config.json"))
with open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.jsonl"), "a") as f:
    for step in range(1, 41):
        loss = 1.0 / (1 + config["lr"] * step)
        f.write(json.dumps({"step": step, "loss": loss, "acc": 1 - loss / 2}) + "\\n")
"""


@pytest.mark.docker
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)")
def test_a_real_sweeps_curves_in_headless_chromium(make_project: Any, orch: Any,
                                                    tmp_path: Path) -> None:
    root = make_project("curves", files={"steps.py": STEP_SCRIPT,
                                         "configs/config.yaml": "lr: 0.1\nseed: 0\n"},
                        command=["python3", "steps.py"])
    swept = orch("sweep", "-p", str(root), "lr=0.05,0.1,0.5", "seed=0,1", "--json")
    assert swept.returncode == 0, swept.stderr
    result = json.loads(swept.stdout)
    html_path = tmp_path / "report.html"
    made = orch("report", result["sweep_id"], "-p", str(root), "-o", str(html_path),
                "--color-by", "lr", "--objective", "loss:min")
    assert made.returncode == 0, made.stderr
    text = html_path.read_text()
    assert "objective: loss (lower is better)" in text and "guessed" not in text

    dumped = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'dom-profile'}", "--dump-dom", html_path.as_uri()],
        capture_output=True, text=True, timeout=180, check=False)
    dom = dumped.stdout
    paths = curve_paths(dom)
    run_ids = sorted(run["run_id"] for run in result["runs"])
    assert sorted(paths) == ["acc", "loss"], dumped.stderr[-2000:]
    assert all(sorted(ids) == run_ids for ids in paths.values())
    assert "colour: <b>lr</b>" in dom
    best = min(result["runs"], key=lambda run: run["metrics"]["loss"])
    assert best["run_id"] in re.search(r'<div class="curve-legend">(.*?)</div>', dom, re.S)[1]

    png_path = tmp_path / "report.png"
    shot = screenshot(html_path, png_path, tmp_path / "profile")
    assert png_path.exists(), shot.stderr[-2000:]
    assert "Uncaught" not in shot.stderr
    _, _, rows = decode_png(png_path.read_bytes())
    amber = sum(1 for row in rows[250:1000] for i in range(0, len(row), 3)
                if row[i] > 220 and 140 < row[i + 1] < 200 and row[i + 2] < 90)
    assert amber > 200, amber  # the best run's halo, in both charts
