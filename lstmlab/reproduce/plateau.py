"""What a network on a plateau of seed 000's multiplication problem is doing (issue 24, item 1).

For a finished run of the 1997 multiplication task (``lstmlab reproduce lyu2015 --only
plateau`` reads every failing table run, and one solving run of the same optimizer beside it):

    gates      the fraction of saturated activations (min(v, 1 − v) < 0.05) and the mean
               activation of every gate of every memory block, on the test set
    operands   which operand the cells hold: R² of each cell's final state c_T regressed
               (least squares with an intercept) on X1, on X2 and on the target X1·X2
    errors     the test errors against X2's position (the lag the network must bridge is the
               sequence's length minus it) and against the target's size
    curvature  the eigenvalues of the Gauss–Newton matrix and of the Hessian (dense: seed 000's
               network has 85 parameters, so P products give the whole matrix) on the first
               ``curvature_samples`` training sequences (300: more than the 85 parameters), at the run's start and at its end

Everything is read from the run's directory (config and last checkpoint); nothing is trained.
Written by hand: a reading of the project's own networks, not a library's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["Plateau", "analyze", "dense_curvature", "operand_r2"]

SATURATION_EPS = 0.05


@dataclass
class Plateau:
    """One run's analysis (module docstring); shapes in comments."""

    name: str
    solved: bool
    mae: float
    wrong: float  # fraction of test sequences with |error| >= 0.04
    saturation: dict[str, list[float]]  # "L0.i" -> per memory block
    gate_mean: dict[str, list[float]]
    r2: list[list[float]]  # (cells, 3): R² of c_T on X1, X2, X1·X2
    cells: Tensor  # (n_show, T, H) cell states of a few test sequences
    marks: Tensor  # (n_show, 2) positions of X1 and X2 in them
    p2: Tensor  # (N,) X2's position in every test sequence
    lengths: Tensor  # (N,)
    target: Tensor  # (N,)
    error: Tensor  # (N,) prediction − target
    spectrum: dict[str, Tensor] = field(default_factory=dict)  # "gn_start", "gn_end", ...

    def verdicts(self) -> dict[str, Any]:
        """A row of the report's table: the few numbers that say what the network does."""
        best = [max(range(3), key=lambda k: r[k]) for r in self.r2]
        holds = [
            ("X1", "X2", "X1·X2")[k] if self.r2[j][k] >= 0.5 else "–" for j, k in enumerate(best)
        ]
        gn = self.spectrum.get("gn_end")
        hess = self.spectrum.get("hessian_end")
        lag = self.lengths - self.p2
        long_lag = lag >= torch.quantile(lag.double(), 0.75)
        wrong = self.error.abs() >= 0.04
        return {
            "max_saturation": max((max(v) for v in self.saturation.values()), default=0.0),
            "cells_hold": ", ".join(holds),
            "gn_rank": int((gn > 1e-10 * gn.max()).sum()) if gn is not None else None,
            "gn_condition": float(gn.max() / gn[gn > 1e-10 * gn.max()].min())
            if gn is not None
            else None,
            "hessian_min": float(hess.min()) if hess is not None else None,
            "hessian_negative": int((hess < 0).sum()) if hess is not None else None,
            "wrong_long_lag": float(wrong[long_lag].double().mean()),
            "wrong_short_lag": float(wrong[~long_lag].double().mean()),
        }


def operand_r2(states: Tensor, features: Tensor) -> Tensor:
    """(H, F): R² of each column of ``states`` (N, H) regressed alone on each column of
    ``features`` (N, F), with an intercept (the squared correlation)."""
    s = states.double() - states.double().mean(0)
    f = features.double() - features.double().mean(0)
    cov = s.T @ f  # (H, F)
    denom = (s * s).sum(0)[:, None] * (f * f).sum(0)[None, :]
    return torch.where(denom > 0, cov**2 / denom.clamp_min(1e-300), torch.zeros_like(cov))


def dense_curvature(obj, kind: str) -> Tensor:
    """The whole P × P curvature matrix from P products of one ``curvature_operator(kind)``
    ("gn" or "hessian"; its set-up is shared by the P products), symmetrised; small networks."""
    op = obj.curvature_operator(kind)
    eye = torch.eye(obj.n_params, dtype=obj.get_params().dtype)
    M = torch.stack([op(eye[i]) for i in range(obj.n_params)], dim=1)
    return 0.5 * (M + M.T)


def _operands(inputs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """X1, X2 and their positions from 1997 multiplication inputs (B, T, 2) (value, marker):
    the marked pairs in order of position; X1 is the earlier one."""
    marked = inputs[..., 1] == 1.0  # (B, T)
    pos = torch.arange(inputs.shape[1]).expand_as(marked)
    first = torch.where(marked, pos, inputs.shape[1]).min(1).values
    second = torch.where(marked, pos, -1).max(1).values
    rows = torch.arange(inputs.shape[0])
    return inputs[rows, first, 0], inputs[rows, second, 0], first, second


def analyze(run_dir: str | Path, *, curvature_samples: int = 300, n_show: int = 6) -> Plateau:
    """The analysis of one finished run of the 1997 multiplication task (module docstring)."""
    from lstmlab.objective import Objective
    from lstmlab.objective.blocks import lstm_cells
    from lstmlab.training import build
    from lstmlab.training.run import RunPaths, load_config, load_run_checkpoint

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if cfg.task.name != "multiplication":
        raise ValueError(f"{run_dir}: the plateau analysis reads multiplication runs only")
    built = build.build_all(cfg)
    model = built.model
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt, _ = load_run_checkpoint(RunPaths(run_dir), cfg, "analyse")
    model.load_state_dict(ckpt["model"])
    summary_path = run_dir / "summary.json"
    solved = False
    if summary_path.exists():
        import json

        solved = bool(json.loads(summary_path.read_text()).get("solved"))

    test = built.test_data.batch()
    inputs, lengths = test.inputs, test.lengths
    with torch.no_grad():
        pred, states = model(inputs, lengths, return_states=True)
        pred = model.output_nonlinearity(pred).reshape(-1)
    target = test.targets.reshape(-1)
    error = pred - target
    x1, x2, p1, p2 = _operands(inputs)

    H = lstm_cells(model)[-1].spec.hidden_size
    rows = torch.arange(inputs.shape[0])
    c = states[..., states.shape[-1] - H :]  # every layer's y then c: the last H are c
    c_last = c[rows, lengths - 1]  # (N, H)
    r2 = operand_r2(c_last, torch.stack([x1, x2, x1 * x2], dim=1))

    saturation, gate_mean = _gate_stats(model, inputs, lengths)

    spectrum: dict[str, Tensor] = {}
    if curvature_samples > 0:
        rows_c = torch.arange(min(curvature_samples, len(built.train_data)))
        batch = built.train_data.batch(rows_c)
        for when, state in (("start", start), ("end", ckpt["model"])):
            model.load_state_dict(state)
            obj = Objective(model, batch)
            for kind in ("gn", "hessian"):
                spectrum[f"{kind}_{when}"] = torch.linalg.eigvalsh(dense_curvature(obj, kind))
        model.load_state_dict(ckpt["model"])

    show = torch.arange(min(n_show, inputs.shape[0]))
    return Plateau(
        name=run_dir.name,
        solved=solved,
        mae=float(error.abs().mean()),
        wrong=float((error.abs() >= 0.04).double().mean()),
        saturation=saturation,
        gate_mean=gate_mean,
        r2=r2.tolist(),
        cells=c[show].detach(),
        marks=torch.stack([p1[show], p2[show]], dim=1),
        p2=p2,
        lengths=lengths,
        target=target.detach(),
        error=error.detach(),
        spectrum=spectrum,
    )


def _gate_stats(model, inputs, lengths) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Fraction of saturated activations (min(v, 1 − v) < ``SATURATION_EPS``) and mean
    activation of every gate and memory block over the valid steps, from one recorded pass."""
    from lstmlab.objective.blocks import lstm_cells, record_gates, valid_steps

    cells = lstm_cells(model)
    valid = valid_steps(inputs, lengths).unsqueeze(-1)  # (T, B, 1)
    total = valid.sum((0, 1))
    saturation: dict[str, list[float]] = {}
    means: dict[str, list[float]] = {}
    for k, q in record_gates(model, inputs, lengths).items():  # q (T, B, n_q)
        sat = ((torch.minimum(q, 1 - q) < SATURATION_EPS).to(q.dtype) * valid).sum((0, 1)) / total
        mean = (q * valid).sum((0, 1)) / total
        for g in cells[k].spec.gates:
            saturation[f"L{k}.{g}"] = sat[cells[k].spec.q_slice(g)].tolist()
            means[f"L{k}.{g}"] = mean[cells[k].spec.q_slice(g)].tolist()
    return saturation, means
