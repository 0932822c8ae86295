"""From a ``RunConfig`` to the objects the training loop takes: task data, model, optimizer,
objective factory, evaluation and stopping rule.

Errors the config could not catch by itself (an unknown task option, an option the cell or the
optimizer does not accept, a value one of them rejects) become ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lstmlab.data import Batch
from lstmlab.training.config import ConfigError, RunConfig
from lstmlab.training.stopping import StoppingRule

__all__ = ["Built", "build_all", "build_task", "build_model", "build_optimizer", "device_of"]

EVAL_CHUNK = 1000  # sequences per evaluation forward pass (bounds memory on long corpora)


def device_of(cfg: RunConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA device is available")
    return torch.device(cfg.device)


def dtype_of(cfg: RunConfig) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[cfg.precision]


def _call(key: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call a builder; an unknown or rejected argument becomes a ConfigError naming ``key``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = None
    if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        valid = [n for n, p in params.items() if p.kind in kinds]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", f"unknown option; valid: {', '.join(valid)}")
    try:
        return fn(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(key, str(err).splitlines()[0]) from None


# --------------------------------------------------------------------------------------------


def build_task(cfg: RunConfig):
    import lstmlab.tasks as tasks

    if cfg.task.name not in tasks.names():
        raise ConfigError(
            "task.name", f"unknown task {cfg.task.name!r}; valid: {', '.join(tasks.names())}"
        )
    options = {"seed": cfg.seed, **cfg.task.options}
    return _call("task.options", lambda **kw: tasks.make(cfg.task.name, **kw), options)


def build_model(cfg: RunConfig, task, device: torch.device, dtype: torch.dtype):
    from lstmlab.nn.sequence_model import SequenceModel

    m = cfg.model
    kwargs: dict[str, Any] = dict(task.model_kwargs())
    kwargs.update(
        hidden_size=m.hidden_size,
        cell=m.cell,
        engine=m.engine,
        seed=cfg.seed,
        dtype=dtype,
        device=device,
        bidirectional=task.bidirectional,  # the framewise / CTC tasks promise one
    )
    if m.cell == "lstm":
        kwargs.update(variant=m.variant, cells_per_block=m.cells_per_block, gate_sharpness=m.alpha)
    kwargs.update(m.options)
    try:
        return SequenceModel(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError("model", str(err).splitlines()[0]) from None


def build_optimizer(cfg: RunConfig):
    import lstmlab.optim as optim

    o = cfg.optimizer
    common: dict[str, Any] = {}
    if o.lr is not None:
        common["lr"] = o.lr
    name = o.name
    if name in ("lbfgs", "cg") and o.iterations_per_batch is not None:
        common["iterations"] = o.iterations_per_batch
    if name == "lbfgs" and o.history is not None:
        common["history"] = o.history
    if name in ("sgd", "momentum", "nesterov"):
        if o.momentum is not None:
            common["momentum"] = o.momentum
        if name == "nesterov":
            common["nesterov"] = True
    elif o.momentum is not None:
        raise ConfigError("optimizer.momentum", f"not used by optimizer {name!r}")
    if name == "hf":
        common.setdefault("seed", cfg.seed)
        common.setdefault("gradient_batch", o.batch_size)
    factory = {
        "lbfgs": optim.LBFGS,
        "cg": optim.NonlinearCG,
        "hf": optim.HessianFree,
        "sgd": optim.SGD,
        "momentum": optim.SGD,
        "nesterov": optim.SGD,
        "adam": optim.Adam,
    }[name]
    return _call("optimizer.options", factory, {**common, **o.options})


def stop_metric(cfg: RunConfig, task=None) -> str:
    if cfg.stop.metric:
        return cfg.stop.metric
    return task.metric if task is not None else "mae"


def build_stopping(cfg: RunConfig, task) -> StoppingRule:
    s = cfg.stop
    metric = stop_metric(cfg, task)
    higher = task.higher_is_better if metric == task.metric else metric in ("accuracy",)
    return StoppingRule(
        metric=metric,
        target=s.target,
        solved_fn=task.solved if s.target is None else None,
        higher_is_better=higher,
        max_iterations=s.max_iterations,
        max_epochs=s.max_epochs,
        max_samples=s.max_samples,
        max_pd=s.max_pd,
        max_seconds=s.max_seconds,
        patience=s.patience,
        patience_epochs=s.patience_epochs,
    )


def eval_split(cfg: RunConfig, task):
    """The split evaluated during training (``eval_split``: test, or valid for early stopping)."""
    if cfg.eval_split == "valid" and task.valid is None:
        raise ConfigError(
            "eval_split",
            f"task {cfg.task.name!r} has no validation split here (for JapaneseVowels set "
            "task.options.n_valid)",
        )
    return task.valid if cfg.eval_split == "valid" else task.test


class DeviceSplit:
    """A task split whose minibatches arrive on the run's device and in its precision.

    ``noise`` > 0: every minibatch drawn gets fresh Gaussian noise of that σ on its valid input
    steps (Greff et al.'s input noise; training split only). It comes from torch's global
    generator, which checkpoints hold, so a resumed run draws the same noise.
    """

    def __init__(self, split, device: torch.device, dtype: torch.dtype, noise: float = 0.0):
        self.split, self.device, self.dtype, self.noise = split, device, dtype, float(noise)
        self._all: Batch | None = None

    def __len__(self) -> int:
        return len(self.split)

    def batch(self, rows: torch.Tensor | None = None) -> Batch:
        if rows is None:
            if self._all is None:
                self._all = self.split.batch().to(self.device, self.dtype)
            return self._noisy(self._all)
        return self._noisy(self.split.batch(rows).to(self.device, self.dtype))

    def _noisy(self, batch: Batch) -> Batch:
        if self.noise == 0.0:
            return batch
        eps = torch.randn(batch.inputs.shape, dtype=batch.inputs.dtype).to(self.device)
        eps = eps * batch.mask().unsqueeze(-1)  # padding stays zero
        return dataclasses.replace(batch, inputs=batch.inputs + self.noise * eps)

    def chunks(self, size: int = EVAL_CHUNK):
        if len(self) <= size:
            yield self.batch()
            return
        for start in range(0, len(self), size):
            yield self.split.batch(slice(start, start + size)).to(self.device, self.dtype)


@torch.no_grad()
def evaluate(model, task, data: DeviceSplit) -> dict[str, float]:
    """The task's metrics plus the model's mean ``loss`` on a whole split."""
    pairs, loss_sum = [], 0.0
    for batch in data.chunks():
        logits = model(batch.inputs, batch.lengths)
        loss_sum += float(model.loss(logits, batch)) * len(batch)
        pairs.append((model.output_nonlinearity(logits), batch))
    metrics = dict(task.evaluate_batches(pairs))
    metrics["loss"] = loss_sum / len(data)
    return metrics


@dataclass
class Built:
    cfg: RunConfig
    task: Any
    model: Any
    optimizer: Any
    stopping: StoppingRule
    train_data: DeviceSplit
    test_data: DeviceSplit
    make_objective: Callable[[Any, Batch], Any]

    @property
    def target(self) -> float | None:
        """The threshold to draw: the configured target, or the task's own MAE < 0.01."""
        if self.cfg.stop.target is not None:
            return self.cfg.stop.target
        rule = getattr(self.task.scorer, "rule", None)
        return 0.01 if self.stopping.metric == "mae" and rule in ("seed000", "1997") else None

    def evaluate(self, model) -> dict[str, float]:
        return evaluate(model, self.task, self.test_data)

    def evaluate_split(self, split: str) -> dict[str, float]:
        splits = self.task.splits()
        if split not in splits:
            raise ConfigError("split", f"no split {split!r}; valid: {', '.join(splits)}")
        data = DeviceSplit(splits[split], self.test_data.device, self.test_data.dtype)
        return evaluate(self.model, self.task, data)


def build_all(cfg: RunConfig) -> Built:
    from lstmlab.objective import Objective

    device, dtype = device_of(cfg), dtype_of(cfg)
    task = build_task(cfg)
    model = build_model(cfg, task, device, dtype)
    optimizer = build_optimizer(cfg)
    return Built(
        cfg=cfg,
        task=task,
        model=model,
        optimizer=optimizer,
        stopping=build_stopping(cfg, task),
        train_data=DeviceSplit(task.train, device, dtype, noise=cfg.task.input_noise),
        test_data=DeviceSplit(eval_split(cfg, task), device, dtype),
        make_objective=_ObjectiveFactory(Objective),
    )


class _ObjectiveFactory:
    """A new ``Objective`` per minibatch, but the same one while the batch is the same object
    (full-batch training), so L-BFGS can reuse the gradient at the start of its next step."""

    def __init__(self, cls):
        self.cls, self._last = cls, None

    def __call__(self, model, batch: Batch):
        if self._last is None or self._last.batch is not batch or self._last.model is not model:
            self._last = self.cls(model, batch)
        return self._last
