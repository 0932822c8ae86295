"""From a ``RunConfig`` to the objects the training loop takes: task data, model, optimizer,
objective factory, evaluation and stopping rule.

Errors the config could not catch by itself (an unknown task option, an option the cell or the
optimizer does not accept, a value one of them rejects) become ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lstmlab.data import Batch
from lstmlab.objective.cost import CostCounter
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


class DataNotGivenError(ConfigError):
    """The task's options are valid but its data is files the user must give (PTB): ``train``
    refuses as for any bad config (exit 2); ``train --dry-run`` still shows the config."""


# the plain annotations a builder's keyword may carry, and how a message names each
_PLAIN = {
    "bool": ((bool,), "true or false"),
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "str": ((str,), "a string"),
    "None": ((type(None),), "unset"),
}


def check_types(key: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Each of ``kwargs`` whose parameter in ``fn`` is annotated with plain types only (``bool``,
    ``int``, ``float``, ``str``, ``None`` and their unions) must be of one of them -- a bool
    never counts as a number; a ConfigError names ``key.NAME`` and the types. Parameters
    annotated otherwise (``Any``: a constant or a schedule) are left to ``fn``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    for name, value in kwargs.items():
        p = params.get(name)
        if p is None:
            continue
        note = (
            p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        )
        parts = [t.strip() for t in str(note).replace("Optional[", "").rstrip("]").split("|")]
        if not parts or any(t not in _PLAIN for t in parts):
            continue
        types = tuple(t for part in parts for t in _PLAIN[part][0])
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            wanted = " or ".join(_PLAIN[part][1] for part in parts)
            raise ConfigError(f"{key}.{name}", f"must be {wanted}, got {value!r}")


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
    check_types(key, fn, kwargs)
    from lstmlab.tasks.base import DataNotGiven

    try:
        return fn(**kwargs)
    except DataNotGiven as err:
        raise DataNotGivenError(key, str(err)) from None
    except (TypeError, ValueError) as err:
        message = str(err).splitlines()[0]
        head, sep, rest = message.partition(": ")
        if sep and head.split(".")[0] in kwargs and " " not in head:  # "lm.decrease: ..."
            raise ConfigError(f"{key}.{head}", rest) from None
        raise ConfigError(key, message) from None


# --------------------------------------------------------------------------------------------


def build_task(cfg: RunConfig):
    import lstmlab.tasks as tasks

    if cfg.task.name not in tasks.names():
        raise ConfigError(
            "task.name", f"unknown task {cfg.task.name!r}; valid: {', '.join(tasks.names())}"
        )
    # the run seed reaches the task where its builder draws something (generated sequences,
    # held-out splits); text, PTB and music have splits fixed by their files, so there the
    # seed orders the training chunks only (the training loop) and the task says so
    seeded = tasks.takes(cfg.task.name, "seed")
    options = {"seed": cfg.seed, **cfg.task.options} if seeded else dict(cfg.task.options)
    task = _call("task.options", lambda **kw: tasks.make(cfg.task.name, **kw), options)
    if not seeded:
        task.info["seed"] = (
            f"task {cfg.task.name!r} takes no seed (its splits are fixed); seed {cfg.seed} "
            "sets the initial weights and the order of the training sequences"
        )
    return task


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
    check_types("model.options", SequenceModel.__init__, dict(m.options))
    try:
        model = SequenceModel(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError("model", str(err).splitlines()[0]) from None
    if m.perturbation > 0:
        perturb_(model, m.perturbation, m.perturbation_seed)
    return model


@torch.no_grad()
def perturb_(model: torch.nn.Module, scale: float, seed: int) -> None:
    """θ ← θ + scale · ξ, ξ ~ N(0, 1) from its own generator (``model.perturbation``): the same
    network up to round-off, to see whether a run's outcome depends on the last digits."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        p.add_(noise.to(dtype=p.dtype, device=p.device), alpha=scale)


def build_optimizer(cfg: RunConfig):
    import lstmlab.optim as optim

    o = cfg.optimizer
    common: dict[str, Any] = {}
    if o.lr is not None:
        common["lr"] = o.lr
    name = o.name
    kind = {"sgd-clip": "sgd", "bgd": "sgd", "shf": "hf", "bhf": "hf"}.get(name, name)
    if name in ("lbfgs", "cg") and o.iterations_per_batch is not None:
        common["iterations"] = o.iterations_per_batch
    if name == "lbfgs" and o.history is not None:
        common["history"] = o.history
    if kind in ("sgd", "momentum", "nesterov"):
        if o.momentum is not None:
            common["momentum"] = o.momentum
        if name == "nesterov":
            common["nesterov"] = True
    elif o.momentum is not None:
        raise ConfigError("optimizer.momentum", f"not used by optimizer {name!r}")
    options = dict(o.options)
    if kind == "hf":
        common.setdefault("seed", cfg.seed)
        common.setdefault("gradient_batch", o.batch_size)
        if "lm" in options:
            options["lm"] = damping_rule(options["lm"])
    factory = {
        "lbfgs": optim.LBFGS,
        "cg": optim.NonlinearCG,
        "hf": optim.HessianFree,
        "sgd": optim.SGD,
        "momentum": optim.SGD,
        "nesterov": optim.SGD,
        "adam": optim.Adam,
    }[kind]
    return _call("optimizer.options", factory, {**common, **options})


def describe(built: Built) -> list[str]:
    """What the optimizer and the data resolve to, in words (``train --dry-run``)."""
    cfg, opt = built.cfg, built.optimizer
    lines = [f"gradient batch B_g = {cfg.optimizer.batch_size} sequences per iteration"]
    if hasattr(opt, "curvature_batch"):
        lm = opt.lm
        rule = (
            "λ fixed"
            if lm is None
            else f"λ ×{lm.increase:.4g} when ρ < {lm.low:g}, ×{lm.decrease:.4g} when ρ > {lm.high:g}"
        )
        lines.append(
            f"HF: curvature {opt.curvature}, B_c = {opt.curvature_batch}, "
            f"at most {int(opt.hp('max_cg'))} CG iterations, initial λ = {opt.lam:g}, {rule}"
        )
        if opt.block_damping is not None:
            how = (
                "Levenberg–Marquardt per block"
                if opt.block_rule == "lm"
                else f"λ (1 + {opt.hp('saturation_weight'):g} × saturation of the block's gate)"
            )
            lines.append(f"HF: one λ per {opt.block_damping} block of parameters, {how}")
        if opt.search_batch is not None:
            rho = "" if opt.rho_batch == "curvature" else ", ρ"
            lines.append(
                f"HF: CG-backtracking{rho} and the line search on subsets of B_g "
                f"({opt.search_batch:g} each), apart from B_c"
            )
        if opt.backtrack and opt.backtrack_rule == "best":
            k = int(opt.hp("backtrack_every"))
            lines.append(
                f"HF: CG-backtracking scores the CG iterates 1, {1 + k}, {1 + 2 * k}, … and the "
                "last, and takes the lowest"
            )
        if opt.rho_batch == "curvature":
            lines.append("HF: ρ measured on the curvature batch B_c")
        if opt.hp("weight_decay") > 0:
            lines.append(f"HF: weight decay ½·{opt.hp('weight_decay'):g}·‖θ‖² in its objective")
    if getattr(built.train_data, "fresh", False):
        lines.append("training data: every minibatch newly drawn from the task's generator")
    if getattr(opt, "clip_norm", None) is not None:  # SGD or Adam, by its own name
        lines.append(
            f"{type(opt).__name__}: lr {opt.hp('lr'):g}, gradient norm clipped to "
            f"{opt.clip_norm:g} (torch's clip_grad_norm_)"
        )
    lines.append(f"evaluation during training on the {built.eval_split} split")
    if built.t_ref is not None:
        lines.append(f"cost unit: one forward pass of a sequence of {built.t_ref:g} steps")
    if "seed" in built.task.info and isinstance(built.task.info["seed"], str):
        lines.append(built.task.info["seed"])
    return lines


def damping_rule(table: Any):
    """HF's Levenberg–Marquardt rule from its config table (``optimizer.options.lm``):
    ``{decrease, increase, low, high, min_value, max_value}``, any subset (the rest keep
    Martens' values); ``false`` keeps λ fixed. Checked here, before anything runs."""
    from lstmlab.optim.damping import LevenbergMarquardt

    key = "optimizer.options.lm"
    if table is False:
        return None
    if not isinstance(table, dict):
        raise ConfigError(
            key, f"must be a table such as {{increase = 1.01}} or false, got {table!r}"
        )
    valid = [f.name for f in dataclasses.fields(LevenbergMarquardt)]
    for k, v in table.items():
        if k not in valid:
            raise ConfigError(f"{key}.{k}", f"unknown key; valid: {', '.join(valid)}")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{key}.{k}", f"must be a positive number, got {v!r}")
    try:
        rule = LevenbergMarquardt(**{k: float(v) for k, v in table.items()})
    except ValueError as err:
        raise ConfigError(key, str(err)) from None
    if not rule.min_value < rule.max_value:
        raise ConfigError(
            key, f"need min_value < max_value, got {rule.min_value}, {rule.max_value}"
        )
    if not rule.high < 1:
        raise ConfigError(f"{key}.high", f"must be < 1 (ρ above it shrinks λ), got {rule.high}")
    return rule


def stop_metric(cfg: RunConfig, task=None) -> str:
    if cfg.stop.metric:
        return cfg.stop.metric
    return task.metric if task is not None else "mae"


def offered_metrics(task) -> tuple[str, ...]:
    """The keys of the evaluation dict for ``task`` (``evaluate``: the scorer's metrics, then
    the model's mean ``loss``), read from the scorer's ``finish`` on placeholder sums."""
    from collections import defaultdict

    return (*task.scorer.finish(defaultdict(lambda: 1.0)), "loss")


def build_stopping(cfg: RunConfig, task) -> StoppingRule:
    s = cfg.stop
    metric = stop_metric(cfg, task)
    offered = offered_metrics(task)
    if metric not in offered:
        raise ConfigError(
            "stop.metric",
            f"{metric!r} is not a metric of task {cfg.task.name!r}; valid: {', '.join(offered)} "
            "('' = the task's own success test)",
        )
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
        max_pi=s.max_pi,
        max_seconds=s.max_seconds,
        patience=s.patience,
        patience_epochs=s.patience_epochs,
    )


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

    @property
    def fresh(self) -> bool:
        """Whether every training minibatch is drawn afresh (a generated task's ``fresh``)."""
        return getattr(self.split, "draw", None) is not None

    def drawn(self, k: int, n: int) -> Batch:
        """The k-th fresh minibatch of n sequences (``fresh`` splits only)."""
        return self._noisy(self.split.draw(k, n).batch().to(self.device, self.dtype))

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


EVAL_ELEMENTS = 25_000_000  # numbers held at once during an evaluation (rows · T · per step)


def eval_width(model, task) -> int:
    """Numbers an evaluation holds per row and time step: the inputs, the outputs and the
    recurrent stack's (its gate pre-activations and states, ~6 per unit and layer). The
    recurrent part is what dominates a character model: 1,000 chunks of 200 steps of 200 units
    took 1.2 GB (measured, issue 22), the one-hot inputs and the softmax a tenth of it."""
    rnn = getattr(model, "rnn", None)
    units = getattr(rnn, "hidden_size", 0) * getattr(rnn, "num_layers", 1)
    units *= 2 if getattr(rnn, "bidirectional", False) else 1
    return int(task.input_size) + int(task.output_size) + 6 * int(units)


@torch.no_grad()
def evaluate(model, task, data: DeviceSplit) -> dict[str, float]:
    """The task's metrics plus the model's mean ``loss`` on a whole split, a chunk of rows at
    a time (at most ``EVAL_ELEMENTS`` numbers at once, ``eval_width`` per row and step: a
    word-level softmax is wide, a character model's recurrent state is)."""
    loss_sum = 0.0
    width = max(1, data.split.max_length * eval_width(model, task))
    rows = max(1, min(EVAL_CHUNK, EVAL_ELEMENTS // width))

    def pairs():
        nonlocal loss_sum
        for batch in data.chunks(rows):
            logits = model(batch.inputs, batch.lengths)
            loss_sum += float(model.loss(logits, batch)) * len(batch)
            yield model.output_nonlinearity(logits), batch

    metrics = dict(task.evaluate_batches(pairs()))
    metrics["loss"] = loss_sum / len(data)
    return metrics


FIRST_ORDER = ("sgd", "momentum", "nesterov", "adam")


def carries_state(cfg: RunConfig, task) -> bool:
    """Whether the loop carries the LSTM state from one chunk to the next (``loop.train``):
    the task lays its training text out as parallel streams (``info["streams"]``, with
    ``carry_state``) and the optimizer is first-order. Batch methods (L-BFGS, CG, HF) train on
    large random minibatches of chunks, each from a zero state."""
    streams = task.info.get("streams") if task.info.get("carry_state") else None
    if streams is None or cfg.optimizer.name not in FIRST_ORDER:
        return False
    if cfg.optimizer.batch_size != streams:
        raise ConfigError(
            "optimizer.batch_size",
            f"must equal the task's streams ({streams}) to carry the state across chunks; "
            f"set task.options.streams = {cfg.optimizer.batch_size} or "
            "task.options.carry_state = false",
        )
    return True


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
    carry_state: bool = False  # minibatches in stream order, the state carried (loop.train)
    eval_data: DeviceSplit | None = None  # the split evaluated during training (None: test)
    eval_split: str = "test"
    t_ref: float | None = None  # cost unit: a forward pass of a sequence of t_ref steps

    @property
    def target(self) -> float | None:
        """The threshold to draw: the configured target, or the task's own MAE < 0.01."""
        if self.cfg.stop.target is not None:
            return self.cfg.stop.target
        rule = getattr(self.task.scorer, "rule", None)
        return 0.01 if self.stopping.metric == "mae" and rule in ("seed000", "1997") else None

    def evaluate(self, model) -> dict[str, float]:
        """The evaluation during training: on ``eval_split`` (valid when the task has one)."""
        return evaluate(model, self.task, self.eval_data or self.test_data)

    def evaluate_test(self, model) -> dict[str, float]:
        return evaluate(model, self.task, self.test_data)

    def evaluate_split(self, split: str) -> dict[str, float]:
        splits = self.task.splits()
        if split not in splits:
            raise ConfigError("split", f"no split {split!r}; valid: {', '.join(splits)}")
        data = DeviceSplit(splits[split], self.test_data.device, self.test_data.dtype)
        return evaluate(self.model, self.task, data)


def build_all(cfg: RunConfig) -> Built:
    from lstmlab.objective import Objective
    from lstmlab.training.memory import check_model, check_task

    device, dtype = device_of(cfg), dtype_of(cfg)
    check_task(cfg)  # lower bounds of the memory needed, before anything large is allocated
    task = build_task(cfg)
    check_model(cfg, task)
    model = build_model(cfg, task, device, dtype)
    optimizer = build_optimizer(cfg)
    split = cfg.eval_split
    if split == "auto":
        split = "valid" if task.valid is not None else "test"
    if split == "valid" and task.valid is None:
        raise ConfigError("eval_split", f"task {cfg.task.name!r} has no valid split")
    t_ref = task.info.get("t_ref")
    test_data = DeviceSplit(task.test, device, dtype)
    return Built(
        cfg=cfg,
        task=task,
        model=model,
        optimizer=optimizer,
        stopping=build_stopping(cfg, task),
        train_data=DeviceSplit(task.train, device, dtype, noise=cfg.task.input_noise),
        test_data=test_data,
        make_objective=_ObjectiveFactory(Objective, t_ref),
        eval_data=DeviceSplit(task.valid, device, dtype) if split == "valid" else test_data,
        eval_split=split,
        t_ref=t_ref,
        carry_state=carries_state(cfg, task),
    )


class _ObjectiveFactory:
    """A new ``Objective`` per minibatch, but the same one while the batch is the same object
    (full-batch training), so L-BFGS can reuse the gradient at the start of its next step.

    With ``t_ref`` (chunked text: seed 001's length 200) the cost is counted in forward passes
    of a ``t_ref``-step sequence: P_D by the batch's total length / t_ref (the objective's
    own ``t_ref``), P_I by the batch's longest sequence / t_ref (``RefLengthCounter``), so a
    run on chunks of 100 costs half a unit per chunk, in the paper's units."""

    def __init__(self, cls, t_ref: float | None = None):
        self.cls, self.t_ref, self._last = cls, t_ref, None

    def __call__(self, model, batch: Batch):
        if self._last is None or self._last.batch is not batch or self._last.model is not model:
            if self.t_ref is None:
                self._last = self.cls(model, batch)
            else:
                counter = RefLengthCounter(batch.max_length / self.t_ref)
                self._last = self.cls(model, batch, t_ref=self.t_ref, counter=counter)
        return self._last


class RefLengthCounter(CostCounter):
    """A ``CostCounter`` whose batch-independent count P_I scales by ``length_ratio`` (the
    batch's longest sequence over the reference length): on fully parallel hardware a pass
    over sequences of T steps takes T / t_ref reference passes."""

    def __init__(self, length_ratio: float):
        super().__init__()
        self.length_ratio = float(length_ratio)

    def record(self, kind: str, n_seq: float, units: float | None = None) -> None:
        before = self.p_i
        super().record(kind, n_seq, units)
        self.p_i = before + (self.p_i - before) * self.length_ratio
