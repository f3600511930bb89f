"""compare: only what differs between two runs, as text and as JSON."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from orchestrator.results.compare import MISSING, Diff, compare, diff_to_json, render_diff

LAYERS = {
    "base": ["sha256:" + "0" * 64],
    "env": "sha256:" + "1" * 64,
    "code": "sha256:" + "2" * 64,
    "config": "sha256:" + "3" * 64,
}


@pytest.fixture
def a() -> dict[str, Any]:
    return {
        "run_id": "aaaaaaaaaaaa",
        "status": "succeeded",
        "reason": None,
        "config": {"optimizer": {"name": "SGD", "lr": 0.01}, "model": {"name": "lstm"}, "seed": 0},
        "metrics": {"loss": 0.31, "accuracy": 0.9},
        "image_id": "sha256:" + "a" * 64,
        "layers": copy.deepcopy(LAYERS),
        "git_commit": "c" * 40,
        "dirty": False,
        "command": ["python3", "train.py"],
    }


@pytest.fixture
def b(a: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(a) | {"run_id": "bbbbbbbbbbbb"}


def test_identical_runs(a: dict[str, Any], b: dict[str, Any]) -> None:
    diff = compare(a, b)
    assert diff.identical
    assert diff == Diff(image={"same": True, "a": a["image_id"], "b": a["image_id"], "layers": []})
    assert render_diff(diff, "aaaaaaaaaaaa", "bbbbbbbbbbbb") == (
        "runs are identical in config, metrics and image"
    )
    assert diff_to_json(diff)["identical"] is True


def test_changed_added_and_removed_config_keys_are_dotted(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    b["config"]["optimizer"]["lr"] = 0.001
    b["config"]["model"]["dropout"] = 0.2
    del b["config"]["seed"]
    diff = compare(a, b)
    assert diff.config == [
        ("model.dropout", MISSING, 0.2),
        ("optimizer.lr", 0.01, 0.001),
        ("seed", 0, MISSING),
    ]
    assert not diff.identical
    text = render_diff(diff, "aaaaaaaaaaaa", "bbbbbbbbbbbb")
    assert text.splitlines()[:6] == [
        "--- aaaaaaaaaaaa",
        "+++ bbbbbbbbbbbb",
        "config",
        "  + model.dropout: 0.2",
        "  optimizer.lr: 0.01 -> 0.001",
        "  - seed: 0",
    ]
    assert diff_to_json(diff)["config"] == [
        {"key": "model.dropout", "change": "added", "b": 0.2},
        {"key": "optimizer.lr", "change": "changed", "a": 0.01, "b": 0.001},
        {"key": "seed", "change": "removed", "a": 0},
    ]


def test_config_types_matter_like_they_do_for_the_hash(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    b["config"]["seed"] = 0.0
    assert compare(a, b).config == [("seed", 0, 0.0)]


def test_lists_are_compared_as_values(a: dict[str, Any], b: dict[str, Any]) -> None:
    a["config"]["model"]["layers"] = [64, 64]
    b["config"]["model"]["layers"] = [64, 32]
    assert compare(a, b).config == [("model.layers", [64, 64], [64, 32])]
    assert "  model.layers: [64, 64] -> [64, 32]" in render_diff(compare(a, b), "a", "b")


def test_metric_deltas(a: dict[str, Any], b: dict[str, Any]) -> None:
    b["metrics"] = {"loss": 0.29, "accuracy": 0.9, "f1": 0.5}
    diff = compare(a, b)
    assert diff.metrics == [("f1", MISSING, 0.5, None), ("loss", 0.31, 0.29, -0.02)]
    text = render_diff(diff, "a", "b")
    assert "metrics\n  + f1: 0.5\n  loss: 0.31 -> 0.29 (-0.02)" in text
    assert diff_to_json(diff)["metrics"] == [
        {"name": "f1", "change": "added", "b": 0.5, "delta": None},
        {"name": "loss", "change": "changed", "a": 0.31, "b": 0.29, "delta": -0.02},
    ]


def test_positive_delta_has_a_sign(a: dict[str, Any], b: dict[str, Any]) -> None:
    b["metrics"]["accuracy"] = 0.95
    assert "  accuracy: 0.9 -> 0.95 (+0.05)" in render_diff(compare(a, b), "a", "b")


def test_removed_metric(a: dict[str, Any], b: dict[str, Any]) -> None:
    b["metrics"] = {"loss": 0.31}
    diff = compare(a, b)
    assert diff.metrics == [("accuracy", 0.9, MISSING, None)]
    assert "  - accuracy: 0.9" in render_diff(diff, "a", "b")


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (["config"], ["config"]),
        (["code", "config"], ["code", "config"]),
        (["env"], ["env"]),
        (["base"], ["base"]),
    ],
)
def test_image_layers_that_differ(
    a: dict[str, Any], b: dict[str, Any], changed: list[str], expected: list[str]
) -> None:
    b["image_id"] = "sha256:" + "b" * 64
    for layer in changed:
        b["layers"][layer] = ["sha256:" + "f" * 64] if layer == "base" else "sha256:" + "f" * 64
    diff = compare(a, b)
    assert diff.image == {"same": False, "a": a["image_id"], "b": b["image_id"], "layers": expected}
    text = render_diff(diff, "a", "b")
    assert "image\n  sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb\n" in text
    assert f"  differs in: {', '.join(expected)}" in text
    assert diff_to_json(diff)["image"]["layers"] == expected


def test_image_without_layer_records(a: dict[str, Any], b: dict[str, Any]) -> None:
    del a["layers"], b["layers"]
    b["image_id"] = "sha256:" + "b" * 64
    diff = compare(a, b)
    assert diff.image["same"] is False and diff.image["layers"] == []
    assert "differs in" not in render_diff(diff, "a", "b")


def test_commit_dirty_and_status(a: dict[str, Any], b: dict[str, Any]) -> None:
    b.update(git_commit="d" * 40, dirty=True, status="failed", reason="exit code 3")
    diff = compare(a, b)
    assert diff.commit == ("c" * 40, "d" * 40)
    assert diff.dirty == (False, True)
    assert diff.status == ("succeeded", "failed: exit code 3")
    text = render_diff(diff, "a", "b")
    assert text.endswith(
        "commit\n  cccccccccccc -> dddddddddddd\n"
        "dirty\n  false -> true\n"
        "status\n  succeeded -> failed: exit code 3"
    )
    payload = diff_to_json(diff)
    assert payload["commit"] == {"a": "c" * 40, "b": "d" * 40}
    assert payload["dirty"] == {"a": False, "b": True}
    assert payload["identical"] is False


def test_only_differences_are_reported(a: dict[str, Any], b: dict[str, Any]) -> None:
    b["config"]["optimizer"]["lr"] = 0.001
    diff = compare(a, b)
    assert diff.metrics == [] and diff.commit is None and diff.dirty is None
    text = render_diff(diff, "a", "b")
    for absent in ("metrics", "image", "commit", "dirty", "status", "optimizer.name"):
        assert absent not in text


def test_json_is_serialisable(a: dict[str, Any], b: dict[str, Any]) -> None:
    b["config"]["new"] = {"deep": [1, 2]}
    b["metrics"] = {}
    b["image_id"] = "sha256:" + "b" * 64
    payload = diff_to_json(compare(a, b))
    assert json.loads(json.dumps(payload)) == payload
    assert set(payload) == {
        "identical",
        "config",
        "metrics",
        "image",
        "commit",
        "dirty",
        "status",
        "command",
        "inputs",
    }


def test_missing_is_a_readable_sentinel() -> None:
    assert repr(MISSING) == "MISSING"


def test_an_input_whose_digest_differs_is_shown(a: dict[str, Any], b: dict[str, Any]) -> None:
    ref = {"files": 1, "bytes": 3, "source": "data/x"}
    a["inputs"] = {"x": {**ref, "digest": "sha256:" + "1" * 64}, "same": {**ref, "digest": "s"}}
    b["inputs"] = {"x": {**ref, "digest": "sha256:" + "2" * 64}, "same": {**ref, "digest": "s"},
                   "new": {**ref, "digest": "sha256:" + "3" * 64}}
    diff = compare(a, b)
    assert diff.inputs == [("new", MISSING, "sha256:" + "3" * 64),
                           ("x", "sha256:" + "1" * 64, "sha256:" + "2" * 64)]
    assert not diff.identical
    text = render_diff(diff, "a", "b")
    assert "inputs" in text and "x: sha256:111111111111 -> sha256:222222222222" in text
    assert "same" not in text
    assert diff_to_json(diff)["inputs"][1] == {
        "name": "x", "change": "changed", "a": "sha256:" + "1" * 64, "b": "sha256:" + "2" * 64}
