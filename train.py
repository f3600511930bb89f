"""Demo training script for orch: a tiny text classifier, stdlib only, bit-for-bit deterministic.

orch composes the Hydra config in ``configs/`` and mounts it at ``$ORCH_CONFIG``
(``/orch/config.yaml``) with the same content as JSON next to it; the stdlib has no YAML
parser, so the JSON twin is what is read here.

The dataset is a data input (``${orch.input:...}`` in ``configs/dataset/``, mounted
read-only): short documents whose classes each prefer a few words (``make setup`` writes
them into the gitignored ``data/``; see scripts/demo-data.py). Documents are embedded
with seeded random word (or character) vectors, read forwards and, when the model is
bidirectional, backwards with an exponential decay (an LSTM's poor cousin), then classified
by a small tanh MLP trained with SGD+momentum or Adam.
Everything random derives from ``training_settings.seed``; nothing depends on time,
hash randomization or set iteration order.

Outputs in ``$ORCH_OUTPUT``: ``metrics.json`` (flat numbers), ``model.json`` (weights) and
``metrics.jsonl`` (one line of step metrics per epoch: the learning curves). After every
epoch the whole training state goes to ``$ORCH_CHECKPOINT``; a later attempt of the same
run (after a crash, a cancel, a lost node) starts from there and ends with the same
metrics as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

REQUIRED = (
    "optimizer.name",
    "optimizer.lr",
    "model.hidden_size",
    "model.num_layers",
    "model.bidirectional",
    "model.dropout",
    "model.input_size",
    "dataset.path",
    "dataset.num_classes",
    "dataset.vocabulary_size",
    "embeddings.dim",
    "data_loader.batch_size",
    "training_settings.seed",
    "training_settings.epochs",
)


class ConfigProblem(Exception):
    pass


def lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigProblem(f"config is missing required key '{dotted}'")
        node = node[part]
    return node


def number(config: dict[str, Any], dotted: str, default: float | None = None) -> float:
    try:
        value = lookup(config, dotted)
    except ConfigProblem:
        if default is None:
            raise
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigProblem(f"config key '{dotted}' must be a number, got {value!r}")
    return float(value)


def integer(config: dict[str, Any], dotted: str, minimum: int = 0) -> int:
    value = lookup(config, dotted)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigProblem(f"config key '{dotted}' must be an integer >= {minimum}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- data


def load_documents(config: dict[str, Any]) -> list[tuple[list[int], int]]:
    """The dataset at ``dataset.path``: a TSV file, or a directory of them read in name order.

    A line is ``LABEL<TAB>w3 w17 w5`` (the class, then the words); orch mounts the data
    read-only at /orch/inputs/NAME (see orch.yaml's inputs: and scripts/demo-data.py).
    """
    path = Path(str(lookup(config, "dataset.path")))
    classes = integer(config, "dataset.num_classes", 2)
    vocab = integer(config, "dataset.vocabulary_size", classes)
    shards = sorted(path.glob("*.tsv")) if path.is_dir() else [path]
    if not shards:
        raise ConfigProblem(f"dataset.path {path}: a directory without *.tsv files")
    documents = []
    for shard in shards:
        try:
            lines = shard.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigProblem(f"dataset.path: cannot read {shard}: {exc}") from exc
        for number, line in enumerate(lines, 1):
            label, _, text = line.partition("\t")
            try:
                tokens = [int(word.removeprefix("w")) for word in text.split()]
                documents.append((tokens, int(label)))
            except ValueError:
                raise ConfigProblem(
                    f"{shard}:{number}: expected LABEL<TAB>w1 w2 ..., got {line[:60]!r}"
                ) from None
            if not tokens or not 0 <= documents[-1][1] < classes or not all(
                0 <= token < vocab for token in tokens
            ):
                raise ConfigProblem(
                    f"{shard}:{number}: a document needs words w0..w{vocab - 1} and a label "
                    f"0..{classes - 1} (dataset.vocabulary_size, dataset.num_classes)"
                )
    if len(documents) < 4:
        raise ConfigProblem(f"dataset.path {path}: {len(documents)} documents, need at least 4")
    return documents


def make_embeddings(config: dict[str, Any], rng: random.Random) -> list[list[float]]:
    vocab = integer(config, "dataset.vocabulary_size", 1)
    dim = integer(config, "embeddings.dim", 1)
    scale = 1.0 / math.sqrt(dim)
    character_level = bool(config["embeddings"].get("character_level", False))
    if not character_level:
        return [[rng.gauss(0.0, scale) for _ in range(dim)] for _ in range(vocab)]
    # fastText-like: a word is the mean of its character vectors ("w17" -> w, 1, 7)
    alphabet = "w0123456789"
    chars = {c: [rng.gauss(0.0, scale) for _ in range(dim)] for c in alphabet}
    table = []
    for word in range(vocab):
        spelled = f"w{word}"
        table.append([sum(chars[c][i] for c in spelled) / len(spelled) for i in range(dim)])
    return table


def encode(tokens: list[int], table: list[list[float]], bidirectional: bool) -> list[float]:
    """Exponentially-decayed reading of the document, forwards (and backwards)."""

    def read(sequence: list[int]) -> list[float]:
        state = [0.0] * len(table[0])
        for token in sequence:
            vector = table[token]
            state = [0.75 * s + 0.25 * v for s, v in zip(state, vector, strict=True)]
        return state

    features = read(tokens)
    if bidirectional:
        features = features + read(tokens[::-1])
    return features


# ----------------------------------------------------------------------------- model


class MLP:
    def __init__(self, sizes: list[int], rng: random.Random) -> None:
        self.layers: list[tuple[list[list[float]], list[float]]] = []
        for fan_in, fan_out in zip(sizes, sizes[1:], strict=False):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            weights = [[rng.uniform(-bound, bound) for _ in range(fan_in)] for _ in range(fan_out)]
            self.layers.append((weights, [0.0] * fan_out))

    def parameters(self) -> list[list[float]]:
        """Every weight row and bias vector, in a fixed order (the optimizer's view)."""
        rows: list[list[float]] = []
        for weights, bias in self.layers:
            rows.extend(weights)
            rows.append(bias)
        return rows

    def forward(
        self, x: list[float], dropout: float, rng: random.Random | None
    ) -> tuple[list[list[float]], list[list[float]], list[float]]:
        """Layer inputs, d(input)/d(pre-activation) of each hidden layer, class probabilities."""
        activations = [x]
        slopes: list[list[float]] = []
        last = len(self.layers) - 1
        for index, (weights, bias) in enumerate(self.layers):
            z = [dot(row, x) + b for row, b in zip(weights, bias, strict=True)]
            if index == last:
                return activations, slopes, softmax(z)
            t = [math.tanh(v) for v in z]
            scale = [1.0] * len(t)
            if rng is not None and dropout > 0.0:  # inverted dropout
                scale = [1.0 / (1.0 - dropout) if rng.random() >= dropout else 0.0 for _ in t]
            x = [v * m for v, m in zip(t, scale, strict=True)]
            slopes.append([(1.0 - v * v) * m for v, m in zip(t, scale, strict=True)])
            activations.append(x)
        raise AssertionError("an MLP has at least one layer")

    def backward(
        self,
        activations: list[list[float]],
        slopes: list[list[float]],
        probs: list[float],
        label: int,
    ) -> list[list[float]]:
        """Gradients of the cross-entropy, laid out like :meth:`parameters`."""
        delta = [p - (1.0 if k == label else 0.0) for k, p in enumerate(probs)]
        per_layer: list[list[list[float]]] = []
        for index in range(len(self.layers) - 1, -1, -1):
            weights, _ = self.layers[index]
            inputs = activations[index]
            grads = [[d * a for a in inputs] for d in delta]
            grads.append(list(delta))
            per_layer.append(grads)
            if index > 0:
                columns = range(len(inputs))
                back = [dot([row[i] for row in weights], delta) for i in columns]
                delta = [g * s for g, s in zip(back, slopes[index - 1], strict=True)]
        flat: list[list[float]] = []
        for grads in reversed(per_layer):
            flat.extend(grads)
        return flat


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def softmax(z: list[float]) -> list[float]:
    top = max(z)
    exps = [math.exp(v - top) for v in z]
    total = sum(exps)
    return [e / total for e in exps]


class Optimizer:
    def __init__(self, config: dict[str, Any], params: list[list[float]]) -> None:
        self.name = str(lookup(config, "optimizer.name")).lower()
        if self.name not in ("sgd", "adam"):
            raise ConfigProblem(f"optimizer.name must be SGD or adam, got {self.name!r}")
        self.lr = number(config, "optimizer.lr")
        self.weight_decay = number(config, "optimizer.weight_decay", 0.0)
        self.momentum = number(config, "optimizer.momentum", 0.0)
        betas = config["optimizer"].get("betas", [0.9, 0.999])
        if not (isinstance(betas, list) and len(betas) == 2):
            raise ConfigProblem(f"optimizer.betas must be a list of two numbers, got {betas!r}")
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = number(config, "optimizer.eps", 1e-8)
        self.state1 = [[0.0] * len(row) for row in params]
        self.state2 = [[0.0] * len(row) for row in params]
        self.steps = 0

    def step(self, params: list[list[float]], grads: list[list[float]]) -> None:
        self.steps += 1
        t = self.steps
        for row, grad, m, v in zip(params, grads, self.state1, self.state2, strict=True):
            for i, g in enumerate(grad):
                g += self.weight_decay * row[i]
                if self.name == "sgd":
                    m[i] = self.momentum * m[i] + g
                    row[i] -= self.lr * m[i]
                else:
                    m[i] = self.beta1 * m[i] + (1.0 - self.beta1) * g
                    v[i] = self.beta2 * v[i] + (1.0 - self.beta2) * g * g
                    m_hat = m[i] / (1.0 - self.beta1**t)
                    v_hat = v[i] / (1.0 - self.beta2**t)
                    row[i] -= self.lr * m_hat / (math.sqrt(v_hat) + self.eps)


# ------------------------------------------------------------------ curves and checkpoints


class History:
    """``metrics.jsonl``: one JSON object of numbers per line, appended as training goes."""

    def __init__(self, path: Path, earlier: list[str]) -> None:
        self.path = path
        self.lines = list(earlier)
        path.write_text("".join(line + "\n" for line in earlier))  # a resumed run's past

    def log(self, values: dict[str, float]) -> None:
        line = json.dumps(values, sort_keys=True)
        self.lines.append(line)
        with self.path.open("a") as handle:
            handle.write(line + "\n")


def open_history(output: Path, earlier: list[str]) -> History:
    return History(output / "metrics.jsonl", earlier)


class Checkpoint:
    """The whole training state after an epoch, written atomically to $ORCH_CHECKPOINT."""

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / "state.json" if directory else None

    @classmethod
    def from_env(cls) -> Checkpoint:
        directory = os.environ.get("ORCH_CHECKPOINT")
        return cls(Path(directory) if directory else None)

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.is_file():
            return None
        return json.loads(self.path.read_text())

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)  # a kill mid-write leaves the previous epoch's state


def _rng_state(saved: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


# ----------------------------------------------------------------------------- training


def evaluate(model: MLP, data: list[tuple[list[float], int]]) -> tuple[float, float]:
    loss = 0.0
    correct = 0
    for x, label in data:
        _, _, probs = model.forward(x, 0.0, None)
        loss -= math.log(max(probs[label], 1e-12))
        correct += int(max(range(len(probs)), key=probs.__getitem__) == label)
    return loss / len(data), correct / len(data)


def train(config: dict[str, Any], output: Path) -> dict[str, float]:
    for key in REQUIRED:
        lookup(config, key)
    seed = integer(config, "training_settings.seed")
    epochs = integer(config, "training_settings.epochs", 1)
    bidirectional = bool(lookup(config, "model.bidirectional"))
    if integer(config, "model.input_size", 1) != integer(config, "embeddings.dim", 1):
        raise ConfigProblem("model.input_size must equal embeddings.dim")
    dropout = number(config, "model.dropout")
    if not 0.0 <= dropout < 1.0:
        raise ConfigProblem(f"model.dropout must be in [0, 1), got {dropout}")
    hidden = integer(config, "model.hidden_size", 1)
    num_layers = integer(config, "model.num_layers", 1)
    batch_size = integer(config, "data_loader.batch_size", 1)
    shuffle = bool(config["data_loader"].get("shuffle", True))
    classes = integer(config, "dataset.num_classes", 2)
    test_fraction = number(config, "dataset.test_fraction", 0.25)

    # independent streams, so changing e.g. dropout does not change the embeddings
    embed_rng = random.Random(f"embeddings:{seed}")
    init_rng = random.Random(f"init:{seed}")
    train_rng = random.Random(f"train:{seed}")

    documents = load_documents(config)
    table = make_embeddings(config, embed_rng)
    encoded = [(encode(tokens, table, bidirectional), label) for tokens, label in documents]
    n_test = max(1, int(len(encoded) * test_fraction))
    test, train_set = encoded[:n_test], encoded[n_test:]

    features = len(encoded[0][0])
    model = MLP([features] + [hidden] * num_layers + [classes], init_rng)
    params = model.parameters()
    optimizer = Optimizer(config, params)
    print(
        f"train: {len(train_set)} documents, {len(test)} held out, {features} features, "
        f"{num_layers}x{hidden} hidden, {optimizer.name} lr={optimizer.lr} "
        f"(device {config['training_settings'].get('device', 'cpu')} requested; stdlib runs on cpu)"
    )

    order = list(range(len(train_set)))
    checkpoint = Checkpoint.from_env()
    first = 1
    state = checkpoint.load()
    if state is not None:
        first = state["epoch"] + 1
        for row, saved in zip(params, state["params"], strict=True):
            row[:] = saved
        optimizer.state1, optimizer.state2 = state["state1"], state["state2"]
        optimizer.steps = state["steps"]
        order = state["order"]
        train_rng.setstate(_rng_state(state["rng"]))
        print(f"resumed after epoch {state['epoch']} from {checkpoint.path}")
    history = open_history(output, state["history"] if state else [])
    pause = number(config, "training_settings.epoch_sleep", 0.0)
    for epoch in range(first, epochs + 1):
        epoch_loss = 0.0
        if shuffle:
            train_rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            total = [[0.0] * len(row) for row in params]
            for index in batch:
                x, label = train_set[index]
                activations, slopes, probs = model.forward(x, dropout, train_rng)
                epoch_loss -= math.log(max(probs[label], 1e-12))
                grads = model.backward(activations, slopes, probs, label)
                for acc, grad in zip(total, grads, strict=True):
                    for i, g in enumerate(grad):
                        acc[i] += g
            scale = 1.0 / len(batch)
            optimizer.step(params, [[g * scale for g in row] for row in total])
        if epoch == 1 or epoch == epochs or epoch % 10 == 0:
            # the running loss of the epoch (with dropout); a full evaluation costs a pass
            print(f"epoch {epoch}/{epochs}: loss={epoch_loss / len(order):.4f}", flush=True)
        _, held_out = evaluate(model, test)
        history.log({"step": epoch, "epoch": epoch, "train_loss": epoch_loss / len(order),
                     "test_accuracy": held_out})
        checkpoint.save({
            "epoch": epoch, "params": params, "state1": optimizer.state1,
            "state2": optimizer.state2, "steps": optimizer.steps, "order": order,
            "rng": train_rng.getstate(), "history": history.lines,
        })
        if pause:
            time.sleep(pause)

    loss, accuracy = evaluate(model, train_set)
    print(f"train: loss={loss:.4f} accuracy={accuracy:.4f}")

    test_loss, test_accuracy = evaluate(model, test)
    print(f"test: loss={test_loss:.4f} accuracy={test_accuracy:.4f}")
    metrics = {
        "loss": loss,
        "accuracy": accuracy,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "epochs": float(epochs),
        "steps": float(optimizer.steps),
        "parameters": float(sum(len(row) for row in params)),
    }
    weights = {
        "layers": [
            {
                "shape": [len(w), len(w[0])],
                "weight_norm": math.sqrt(sum(v * v for row in w for v in row)),
                "weights": w,
                "bias": b,
            }
            for w, b in model.layers
        ]
    }
    (output / "model.json").write_text(json.dumps(weights, sort_keys=True) + "\n")
    (output / "metrics.json").write_text(json.dumps(metrics, sort_keys=True, indent=2) + "\n")
    return metrics


def main() -> int:
    try:
        config_path = Path(os.environ["ORCH_CONFIG"]).with_suffix(".json")
        output = Path(os.environ.get("ORCH_OUTPUT", "output"))
    except KeyError:
        print("train.py: ORCH_CONFIG is not set (orch sets it inside the run)", file=sys.stderr)
        return 2
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"train.py: cannot read the config {config_path}: {exc}", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    try:
        train(config, output)
    except ConfigProblem as exc:
        print(f"train.py: {config_path}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
