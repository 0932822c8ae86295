"""Hessian-free optimisation (Martens 2010; Martens & Sutskever 2011; seeds 000 and 001).

Hand-written, as SPEC S3 lists it. One ``step`` on a gradient batch B_g:

    1. f₀, g  = loss and gradient on B_g                                 (3·B_g)
    2. B_c    = a random subset of B_g (``curvature_batch``), A = C + λI + λμ·J_sᵀW_sJ_s with
                C the Gauss–Newton matrix (default), the exact Hessian or a finite-difference
                Hessian on B_c (whatever products ``Objective.curvature_operator`` provides)
    3. p      = CG on A p = −g from ζ·p_prev (``warm_start_point``, ζ = 0.95), Martens' stop
                (``cg.martens_should_stop``), ≤ max_cg iterations, preconditioned by Martens'
                diagonal or the L-BFGS matrix (``preconditioners``); negative curvature (exact /
                FD) ends CG and the offending direction is discarded
    4. CG-backtracking (``cg_backtracking.cg_backtrack``): from the last kept iterate go back
                while f on B_g decreases                                   (1·B_g each)
                (``backtrack_rule = "best"``: every ``backtrack_every``-th iterate and the last
                scored, the lowest f taken: M&S's released code)
    5. ρ      = (f(θ+p) − f₀) / φ(p) (``damping.reduction_ratio``); λ by Levenberg–Marquardt
                (``damping.LevenbergMarquardt``: ×3/2 below 1/4, ×2/3 above 3/4)
    6. Armijo backtracking t = 1, 0.8, … (c = 1e-2) along p (``line_search.armijo``); θ ← θ + t p

As M&S's released HF-RNN code runs it (issue 24), steps 4–6 can score other batches:
``search_batch`` puts CG-backtracking (and ρ) on one subset of B_g and the line search on
another, both apart from B_c; ``rho_batch = "curvature"`` measures ρ on B_c. ``weight_decay``
ω makes the objective f + ½ω‖θ‖² throughout (ωθ in g, ωI in A outside λ). The per-block ρ of
the gate-aware "lm" rule below stays on all of B_g. The logged ``loss`` is f₀ without the
decay (``extra["objective"]`` with it), and so is ``new_loss``, the line search's value on
B_g (``extra["search_loss"]`` when it searched a subset).

Gate-aware damping (seed 000 Sec. 6's conjecture; ``block_damping``): the Tikhonov term λI
becomes diag(λ_b) with one λ_b per block of parameters — per gate kind (cell input, input /
forget / output gate, peepholes, readout: ``"gate"``) or also per memory block
(``"memory-block"``), blocks from ``Objective.parameter_blocks`` (``objective/blocks.py``).
Two rules set λ_b:

    "lm"          Levenberg–Marquardt per block: after the step, each block's own reduction
                  ratio ρ_b = (f(θ + p_b) − f₀) / φ_b(p_b), p_b = p restricted to block b,
                  φ_b(p_b) = gᵀp_b + ½ p_bᵀ A p_b, moves λ_b by the LM factors (one loss and
                  one curvature product per block and iteration, counted in P_D)
    "saturation"  λ_b = λ · (1 + κ · s_b), s_b the fraction of saturated activations of the gate
                  block b feeds (``Objective.gate_saturation``, min(v, 1 − v) < ε; 0 for cell
                  and readout blocks), λ by the usual LM rule: the flat directions of shut or
                  open gates, where the curvature vanishes, are damped harder

Structural damping and the diagonal preconditioner use λ̄, the size-weighted geometric mean of
λ_b (λ itself under "saturation"). With every λ_b equal, "lm" takes plain HF's step.

A non-finite loss or gradient (step 1), a non-finite curvature product (CG), or a failed line
search leaves θ unchanged, raises λ (×``nonfinite_increase`` for non-finite values, LM
otherwise) and is reported (``rejected=True``).

Hyperparameters: every number is a constant or a schedule over HF iterations
(``lstmlab.schedules``), checked against its range at construction and whenever it is read.
λ (``damping``) is a schedule only when ``lm`` is off: Levenberg–Marquardt adapts λ itself, so
with LM only λ's initial value is given. Option tables from config files are accepted where a
Python object would be: ``lm = {decrease = 0.99, increase = 1.01}``, ``lm = false``,
``preconditioner = "none"``.

Presets: ``large_batch_hf`` (B_g = 14000, B_c = 3500) and ``stochastic_hf`` (Kiros 2013:
B_g = 320, B_c = 32, gentle damping changes), seed 001's batch sizes. The optimizer records
``gradient_batch`` for the training loop; it does not draw data itself.

``state_dict`` layout (``state``): lam (λ now), lam_scale (the factor non-finite rejections put
on a scheduled λ), p_prev (last CG solution, for the warm start), pc_S / pc_Y (L-BFGS
preconditioner pairs), generator (the RNG of the curvature and search subsets).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lstmlab.optim.base import Optimizer, StepInfo, finite
from lstmlab.optim.cg import backtrack_indices, conjugate_gradient
from lstmlab.optim.cg_backtracking import BACKTRACK_RULES, cg_backtrack, every_indices
from lstmlab.optim.damping import LevenbergMarquardt, as_levenberg_marquardt, reduction_ratio
from lstmlab.optim.line_search import armijo
from lstmlab.optim.preconditioners import diagonal_preconditioner, lbfgs_preconditioner
from lstmlab.schedules import Constant, as_schedule

__all__ = [
    "HessianFree",
    "large_batch_hf",
    "stochastic_hf",
    "warm_start_point",
    "CURVATURES",
    "PRECONDITIONERS",
    "HF_RANGES",
    "BLOCK_DAMPINGS",
    "BLOCK_RULES",
    "RHO_BATCHES",
]

CURVATURES = ("gn", "hessian", "fd")
PRECONDITIONERS = (None, "diagonal", "lbfgs")

# (lower, lower inclusive, upper, upper inclusive) for each numeric hyperparameter
HF_RANGES: dict[str, tuple[float, bool, float, bool]] = {
    "damping": (0.0, True, math.inf, False),
    "structural_weight": (0.0, True, math.inf, False),
    "max_cg": (1.0, True, math.inf, False),
    "cg_tol": (0.0, True, math.inf, False),
    "warm_start": (0.0, True, 1.0, True),
    "backtrack_base": (0.0, False, math.inf, False),
    "backtrack_ratio": (1.0, False, math.inf, False),
    "backtrack_every": (1.0, True, math.inf, False),
    "armijo_c": (0.0, False, 1.0, False),
    "armijo_shrink": (0.0, False, 1.0, False),
    "armijo_max_evals": (1.0, True, math.inf, False),
    "diag_exponent": (0.0, True, math.inf, False),
    "lbfgs_history": (1.0, True, math.inf, False),
    "curvature_batch": (0.0, False, math.inf, False),
    "nonfinite_increase": (1.0, True, math.inf, False),
    "saturation_weight": (0.0, True, math.inf, False),
    "saturation_eps": (0.0, False, 0.5, False),
    "weight_decay": (0.0, True, math.inf, False),
    "search_batch": (0.0, False, math.inf, False),
}
BLOCK_DAMPINGS = (None, "gate", "memory-block")
BLOCK_RULES = ("lm", "saturation")
RHO_BATCHES = ("search", "curvature")


def _range_text(lo: float, lo_in: bool, hi: float, hi_in: bool) -> str:
    left = f"{'>=' if lo_in else '>'} {lo:g}"
    return left if hi == math.inf else f"{left} and {'<=' if hi_in else '<'} {hi:g}"


def _probe_iterations(schedule: Any) -> list[int]:
    """Iterations at which to check a schedule when HF is built: a log grid to 10⁶ and the
    schedule's own corners (``steps``, ``boundaries``)."""
    its = {0, 1, 2, 5} | {10**k * m for k in range(1, 7) for m in (1, 2, 5)}
    for attr in ("steps", "every"):
        if isinstance(getattr(schedule, attr, None), int):
            its.add(getattr(schedule, attr))
    its.update(getattr(schedule, "boundaries", ()))
    return sorted(i for i in its if i >= 0)


def warm_start_point(p_prev: Tensor | None, decay: float) -> Tensor | None:
    """CG's starting point ζ·p_prev (Martens 2010 Sec. 4.5; ζ = 0.95); None: start from 0."""
    if p_prev is None or decay == 0.0:
        return None
    return decay * p_prev


class HessianFree(Optimizer):
    """Args (``*``: constant or schedule over iterations):
    curvature: "gn" | "hessian" | "fd".   damping*: λ (a schedule only with lm off).
    lm: Levenberg–Marquardt rule, a table of its fields, or None/False/"none" (λ not adapted).
    structural_weight*: μ (M&S 2011 default 1/30; 0 turns structural damping off).
    structural_form: "mean" (states averaged over time) | "released" (M&S's released code:
        tanh-RNN pre-activations, summed over time; ``CurvatureOperator``).
    max_cg*: CG iteration cap.   cg_tol*: Martens' tolerance.   warm_start*: ζ (0.95).
    backtrack: CG-backtracking on/off.   backtrack_base*, backtrack_ratio*: 5, 1.3.
    backtrack_rule: "walk-back" (Martens: the iterates at ⌈base·ratio^k⌉ and the last, back from
        the last while f falls) | "best" (M&S's released code: the iterates at CG iterations 1,
        1 + backtrack_every*, … and the last, every one scored, the lowest f taken).
    line_search: Armijo on/off; armijo_c*, armijo_shrink*, armijo_max_evals*.
    preconditioner: None | "diagonal" | "lbfgs"; diag_exponent* ξ; lbfgs_history*.
    curvature_batch*: B_c as a count (≥ 1) or a fraction (< 1) of B_g (None: all of B_g).
    gradient_batch: B_g the training loop should feed (informative).
    nonfinite_increase*: λ factor after a non-finite value.   seed: B_c / search-subset RNG.
    block_damping: None | "gate" | "memory-block" (one λ_b per block; module docstring).
    block_rule: "lm" (LM per block) | "saturation" (λ_b = λ (1 + κ s_b)).
    saturation_weight*: κ (10).   saturation_eps*: ε of a saturated gate (0.05).
    weight_decay*: ω; HF minimises f + ½ω‖θ‖² (gradient + ωθ, curvature + ωI, every loss it
        compares includes the term; 0: off). M&S's released code uses 2e-5.
    search_batch*: score CG-backtracking, ρ and the line search on subsets of B_g instead of all
        of it, as M&S's released code does: a count (≥ 1) or a fraction (< 1) of B_g, one
        subset for the backtracking (and ρ, unless ``rho_batch`` says B_c) and another for the
        line search, drawn apart from B_c and from each other where B_g has the rows (None: all
        of B_g).
    rho_batch: where ρ's loss change is measured: "search" (the objective CG-backtracking
        scored: B_g, or its ``search_batch`` subset) or "curvature" (B_c, two more losses on it:
        M&S's released code).
    """

    def __init__(
        self,
        curvature: str = "gn",
        damping: Any = 1.0,
        *,
        lm: Any = LevenbergMarquardt(),  # noqa: B008 - frozen
        structural_weight: Any = 1.0 / 30.0,
        structural_form: str = "mean",
        max_cg: Any = 250,
        cg_tol: Any = 5e-4,
        warm_start: Any = 0.95,
        backtrack: bool = True,
        backtrack_base: Any = 5.0,
        backtrack_ratio: Any = 1.3,
        backtrack_rule: str = "walk-back",
        backtrack_every: Any = 10,
        line_search: bool = True,
        armijo_c: Any = 1e-2,
        armijo_shrink: Any = 0.8,
        armijo_max_evals: Any = 60,
        preconditioner: str | None = None,
        diag_exponent: Any = 0.75,
        lbfgs_history: Any = 10,
        curvature_batch: Any = None,
        gradient_batch: int | None = None,
        nonfinite_increase: Any = 10.0,
        seed: int = 0,
        block_damping: str | None = None,
        block_rule: str = "lm",
        saturation_weight: Any = 10.0,
        saturation_eps: Any = 0.05,
        weight_decay: Any = 0.0,
        search_batch: Any = None,
        rho_batch: str = "search",
    ) -> None:
        hyper = {
            "damping": damping,
            "structural_weight": structural_weight,
            "max_cg": max_cg,
            "cg_tol": cg_tol,
            "warm_start": warm_start,
            "backtrack_base": backtrack_base,
            "backtrack_ratio": backtrack_ratio,
            "backtrack_every": backtrack_every,
            "armijo_c": armijo_c,
            "armijo_shrink": armijo_shrink,
            "armijo_max_evals": armijo_max_evals,
            "diag_exponent": diag_exponent,
            "lbfgs_history": lbfgs_history,
            "nonfinite_increase": nonfinite_increase,
            "saturation_weight": saturation_weight,
            "saturation_eps": saturation_eps,
            "weight_decay": weight_decay,
        }
        if curvature_batch is not None:
            hyper["curvature_batch"] = curvature_batch
        if search_batch is not None:
            hyper["search_batch"] = search_batch
        for name, value in hyper.items():
            try:
                hyper[name] = as_schedule(value)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        super().__init__(**hyper)
        if curvature not in CURVATURES:
            raise ValueError(f"curvature: unknown kind {curvature!r}; valid: gn, hessian, fd")
        if preconditioner == "none":
            preconditioner = None
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(
                f"preconditioner: unknown {preconditioner!r}; valid: none, diagonal, lbfgs"
            )
        if block_damping == "none":
            block_damping = None
        if block_damping not in BLOCK_DAMPINGS:
            raise ValueError(
                f"block_damping: unknown {block_damping!r}; valid: none, gate, memory-block"
            )
        from lstmlab.objective.curvature import STRUCTURAL_FORMS

        if structural_form not in STRUCTURAL_FORMS:
            raise ValueError(f"structural_form: unknown {structural_form!r}; valid: mean, released")
        self.structural_form = structural_form
        if backtrack_rule not in BACKTRACK_RULES:
            raise ValueError(
                f"backtrack_rule: unknown {backtrack_rule!r}; valid: {', '.join(BACKTRACK_RULES)}"
            )
        self.backtrack_rule = backtrack_rule
        if rho_batch not in RHO_BATCHES:
            raise ValueError(f"rho_batch: unknown {rho_batch!r}; valid: search, curvature")
        self.rho_batch = rho_batch
        if block_rule not in BLOCK_RULES:
            raise ValueError(f"block_rule: unknown {block_rule!r}; valid: lm, saturation")
        for name, value in (("backtrack", backtrack), ("line_search", line_search)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: must be true or false, got {value!r}")
        if gradient_batch is not None and not (
            isinstance(gradient_batch, int) and gradient_batch >= 1
        ):
            raise ValueError(f"gradient_batch: must be an integer >= 1, got {gradient_batch!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: must be an integer >= 0, got {seed!r}")
        self.lm = as_levenberg_marquardt(lm)
        if self.lm is not None and not isinstance(self.hyper["damping"], Constant):
            raise ValueError(
                "damping: a schedule for λ needs lm off (lm = false); "
                "Levenberg–Marquardt adapts λ itself from its initial value"
            )
        for name, schedule in self.hyper.items():  # out-of-range values fail now, not mid-run
            for it in _probe_iterations(schedule):
                self.value(name, it)
        self.curvature = curvature
        self.lam = self.value("damping")
        self.lam_scale = 1.0
        self.backtrack, self.line_search = backtrack, line_search
        self.preconditioner = preconditioner
        self.gradient_batch = gradient_batch
        self.generator = torch.Generator().manual_seed(seed)
        self.p_prev: Tensor | None = None
        self.pc_S: list[Tensor] = []
        self.pc_Y: list[Tensor] = []
        self.block_damping, self.block_rule = block_damping, block_rule
        self.lam_blocks: Tensor | None = None  # (K,) λ_b of the "lm" rule, float64
        self._blocks = None  # (n_params, ParameterBlocks) of the last objective

    # ------------------------------------------------------------------ hyperparameters
    def value(self, name: str, iteration: int | None = None) -> float:
        """Hyperparameter ``name`` now (or at ``iteration``), checked against ``HF_RANGES``."""
        it = self.iteration if iteration is None else iteration
        v = self.hyper[name](it)
        lo, lo_in, hi, hi_in = HF_RANGES[name]
        ok = math.isfinite(v) and (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
        if not ok:
            raise ValueError(
                f"{name}: must be {_range_text(lo, lo_in, hi, hi_in)}, got {v!r} at iteration {it}"
            )
        return v

    @property
    def curvature_batch(self) -> float | None:
        return self.value("curvature_batch") if "curvature_batch" in self.hyper else None

    @property
    def search_batch(self) -> float | None:
        return self.value("search_batch") if "search_batch" in self.hyper else None

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _size(fraction_or_count: float, n: int) -> int:
        v = fraction_or_count
        return max(1, int(round(v * n)) if v < 1 else int(round(v)))

    def _curvature_rows(self, n: int) -> Tensor | None:
        """B_c's rows of B_g (sorted), or None: all of B_g."""
        bc = self.curvature_batch
        if bc is None or self._size(bc, n) >= n:
            return None
        return torch.randperm(n, generator=self.generator)[: self._size(bc, n)].sort().values

    def _search_objectives(self, obj, curvature_rows: Tensor | None):
        """(backtracking objective, line-search objective): ``obj`` itself without
        ``search_batch``; else two subsets of its rows, apart from B_c and from each other
        where B_g has the rows (M&S's released code: batches 1 and 2 of 10, B_c batch 0)."""
        n, sb = obj.n_samples, self.search_batch
        if sb is None or self._size(sb, n) >= n:
            return obj, obj
        size = self._size(sb, n)
        order = torch.randperm(n, generator=self.generator)
        if curvature_rows is not None:  # the rows outside B_c first, then B_c's
            used = torch.zeros(n, dtype=torch.bool)
            used[curvature_rows] = True
            order = torch.cat([order[~used[order]], order[used[order]]])
        first = obj.subset(order[:size].sort().values)
        if n < 2 * size:  # too few rows for two: the line search scores the first subset
            return first, first
        return first, obj.subset(order[size : 2 * size].sort().values)

    def _raise_lambda(self, factor: float) -> None:
        if self.lam_blocks is not None:
            rule = self.lm or LevenbergMarquardt()
            self.lam_blocks = torch.tensor(
                [rule.scale(v, factor) for v in self.lam_blocks.tolist()]
            )
        if self.lm is not None:
            self.lam = self.lm.scale(self.lam, factor)
        else:  # a scheduled λ keeps the factor until a step succeeds
            self.lam_scale *= factor
            self.lam = self.lam * factor

    def _reject(self, info: StepInfo, reason: str, factor: float) -> StepInfo:
        self._raise_lambda(factor)
        info.damping = self.lam
        return info.reject(f"{reason}; λ now {self.lam:.4g}")

    # ------------------------------------------------------------------ step
    def _step(self, obj) -> StepInfo:
        if self.lm is None:
            self.lam = self.value("damping") * self.lam_scale
        lam = self.lam
        x = obj.get_params()
        omega = self.value("weight_decay")

        def decayed(f: float, z: Tensor) -> float:  # f + ½ω‖z‖², the objective HF minimises
            return f + 0.5 * omega * float(z.dot(z)) if omega else f

        f_data, g = obj.loss_and_grad()
        f0 = f_data
        if omega:
            f0, g = decayed(f_data, x), g + omega * x
        info = StepInfo(
            iteration=self.iteration, loss=f_data, grad_norm=float(g.norm()), damping=lam
        )
        if omega:
            info.extra["objective"] = f0
        if not finite(f0, g):
            return self._reject(
                info, "non-finite loss or gradient", self.value("nonfinite_increase")
            )
        if not bool(g.any()):
            info.reason = "zero gradient"
            return info

        rows_c = self._curvature_rows(obj.n_samples)
        cobj = obj if rows_c is None else obj.subset(rows_c)
        bobj, lobj = self._search_objectives(obj, rows_c)
        blocks = self._parameter_blocks(obj)
        d = self._damping_vector(obj, blocks, lam, g) if blocks is not None else None
        if d is not None and self.block_rule == "lm":
            lam = info.damping = self._mean_block_lambda(blocks)
        mu = self.value("structural_weight")
        form = {} if self.structural_form == "mean" else {"structural_form": self.structural_form}
        op = cobj.curvature_operator(self.curvature, structural_weight=lam * mu, **form)
        damp = lam if d is None else d
        if omega:  # the decay's curvature ωI, outside the damping LM adapts
            damp = damp + omega

        def A(v: Tensor) -> Tensor:
            return op(v) + damp * v

        M_inv = None
        if self.preconditioner == "diagonal":
            M_inv = diagonal_preconditioner(
                cobj.per_sample_grads_squared(), damp, self.value("diag_exponent")
            )
        elif self.preconditioner == "lbfgs":
            M_inv = lbfgs_preconditioner(self.pc_S, self.pc_Y)
        max_cg = int(self.value("max_cg"))
        keep = set()
        if self.backtrack and self.backtrack_rule == "best":
            keep = every_indices(max_cg, int(self.value("backtrack_every")))
        elif self.backtrack:
            keep = backtrack_indices(
                max_cg, self.value("backtrack_base"), self.value("backtrack_ratio")
            )
        res = conjugate_gradient(
            A,
            -g,
            warm_start_point(self.p_prev, self.value("warm_start")),
            M_inv=M_inv,
            max_iter=max_cg,
            tol=self.value("cg_tol"),
            keep=keep,
            keep_pairs=int(self.value("lbfgs_history")) if self.preconditioner == "lbfgs" else 0,
        )
        info.cg_iterations, info.cg_stop = res.iterations, res.stop
        info.extra["phi"] = res.phi
        if res.stop == "nonfinite" and res.iterations <= 1:
            return self._reject(
                info, "non-finite curvature product", self.value("nonfinite_increase")
            )
        self.p_prev = res.x.clone()
        if res.pairs:
            self.pc_S = [s.clone() for s, _ in res.pairs]
            self.pc_Y = [y.clone() for _, y in res.pairs]
        if res.stop == "negative_curvature" and (res.iterations <= 1 or not bool(res.x.any())):
            # negative curvature along CG's first direction: discard it (seed 000 Sec. 5.3), and
            # the warm start it began from; take a damped gradient step, scaled by the line search
            self.p_prev = None
            candidates = [
                (
                    0,
                    -g / (damp.clamp_min(1e-12) if d is not None else max(damp, 1e-12)),
                    float("nan"),
                )
            ]
        else:
            candidates = res.iterates

        # the losses CG-backtracking, ρ and the line search compare: on B_g, or on the
        # ``search_batch`` subsets (then their own value at θ, one evaluation each)
        fb0 = f0 if bobj is obj else decayed(bobj.loss(x), x)
        fl0 = f0 if lobj is obj else fb0 if lobj is bobj else decayed(lobj.loss(x), x)
        chosen = cg_backtrack(
            candidates,
            lambda p: decayed(bobj.loss(x + p), x + p),
            enabled=self.backtrack,
            rule=self.backtrack_rule,
        )
        p, phi, f1, evals = chosen.p, chosen.phi, chosen.loss, chosen.evaluations
        evals += (bobj is not obj) + (lobj is not obj and lobj is not bobj)
        info.extra.update(
            backtrack_iterate=chosen.iteration, backtrack_evals=evals, backtrack_phi=phi
        )

        rho_f0, rho_f1 = fb0, f1
        if self.rho_batch == "curvature" and cobj is not bobj and phi < 0:  # (else ρ is NaN)
            rho_f0 = f0 if cobj is obj else decayed(cobj.loss(x), x)
            rho_f1 = decayed(cobj.loss(x + p), x + p)
            evals += 1 + (cobj is not obj)
        rho = reduction_ratio(rho_f0, rho_f1, phi)
        if d is not None and self.block_rule == "lm":
            self._update_block_lambdas(
                lambda z: decayed(obj.loss(z), z), blocks, A, g, x, f0, p, info
            )
            self.lam = self._mean_block_lambda(blocks)
        elif self.lm is not None:
            self.lam = self.lm.update(lam, rho)
        info.rho, info.damping = rho, self.lam

        slope = float(g.dot(p))
        if not slope < 0:
            info.line_search_evals = evals
            self.p_prev = None  # do not warm-start the next solve from a non-descent direction
            return self._reject(info, "CG returned no descent direction", 1.0)
        if self.line_search:
            t, f_new, n = armijo(
                lambda t: decayed(lobj.loss(x + t * p), x + t * p),
                fl0,
                slope,
                f1=f1 if math.isfinite(f1) and lobj is bobj else math.nan,
                c=self.value("armijo_c"),
                shrink=self.value("armijo_shrink"),
                max_evals=int(self.value("armijo_max_evals")),
            )
            evals += n
        else:
            t, f_new = (1.0, f1) if math.isfinite(f1) else (None, f0)
        info.line_search_evals = evals
        if t is None:
            self.p_prev = None
            return self._reject(info, "no decrease along the CG direction", 1.0)
        x_new = x + t * p
        if not bool(torch.isfinite(x_new).all()):
            return self._reject(info, "non-finite update", self.value("nonfinite_increase"))
        obj.set_params(x_new)
        self.lam_scale = 1.0
        info.step_size = t
        f_new -= decayed(0.0, x_new)  # logged like ``loss``: the data term
        if lobj is obj:
            info.new_loss = f_new
        else:  # on the line search's subset: not comparable with ``loss`` on B_g
            info.extra["search_loss"] = f_new
        return info

    # ------------------------------------------------------------------ gate-aware damping
    def _parameter_blocks(self, obj):
        """The objective's parameter blocks (cached per parameter count), or None when off."""
        if self.block_damping is None:
            return None
        if self._blocks is None or self._blocks[0] != obj.n_params:
            if not hasattr(obj, "parameter_blocks"):
                raise ValueError(
                    "block_damping needs an objective that knows its parameter blocks "
                    "(a network of LSTM layers); this one does not"
                )
            self._blocks = (obj.n_params, obj.parameter_blocks(self.block_damping))
        return self._blocks[1]

    def _damping_vector(self, obj, blocks, lam: float, like: Tensor) -> Tensor:
        """(P,) the Tikhonov diagonal: λ_b of each parameter's block."""
        if self.block_rule == "lm":
            if self.lam_blocks is None or self.lam_blocks.numel() != len(blocks):
                self.lam_blocks = torch.full((len(blocks),), float(lam), dtype=torch.float64)
            per_block = self.lam_blocks
        else:
            from lstmlab.objective.blocks import block_saturation

            sat = block_saturation(blocks, obj.gate_saturation(self.value("saturation_eps")))
            per_block = lam * (1.0 + self.value("saturation_weight") * sat)
        return blocks.expand(per_block).to(dtype=like.dtype, device=like.device)

    def _mean_block_lambda(self, blocks) -> float:
        """λ̄: the geometric mean of λ_b weighted by block sizes."""
        w = blocks.sizes().to(torch.float64)
        return float(torch.exp((w * self.lam_blocks.log()).sum() / w.sum()))

    def _update_block_lambdas(self, loss, blocks, A, g: Tensor, x: Tensor, f0: float, p, info):
        """Levenberg–Marquardt per block from each block's own reduction ratio (docstring);
        ``loss(z)``: the objective HF minimises at z."""
        rule = self.lm or LevenbergMarquardt()
        rhos = []
        new = self.lam_blocks.clone()
        for b in range(len(blocks)):
            pb = torch.where(blocks.index.to(p.device) == b, p, torch.zeros_like(p))
            if not bool(pb.any()):
                rhos.append(math.nan)
                continue
            phi_b = float(g.dot(pb) + 0.5 * pb.dot(A(pb)))
            rho_b = reduction_ratio(f0, loss(x + pb), phi_b)
            rhos.append(rho_b)
            if math.isfinite(rho_b) or phi_b < 0:  # a block the model says nothing of keeps λ_b
                new[b] = rule.update(float(new[b]), rho_b)
        self.lam_blocks = new
        info.extra["block_rho"] = rhos
        info.extra["block_damping"] = new.tolist()

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        return {
            "lam": self.lam,
            "lam_scale": self.lam_scale,
            "p_prev": self.p_prev,
            "pc_S": list(self.pc_S),
            "pc_Y": list(self.pc_Y),
            "generator": self.generator.get_state(),
            "lam_blocks": self.lam_blocks,
        }

    def _load_state(self, s: dict[str, Any]) -> None:
        self.lam, self.p_prev = float(s["lam"]), s["p_prev"]
        self.lam_scale = float(s.get("lam_scale", 1.0))
        self.pc_S, self.pc_Y = list(s["pc_S"]), list(s["pc_Y"])
        self.generator.set_state(s["generator"])
        self.lam_blocks = s.get("lam_blocks")


def large_batch_hf(**overrides: Any) -> HessianFree:
    """Seed 001's large-batch HF: B_g = 14000, B_c = 3500, Martens' damping rule."""
    kw: dict[str, Any] = {"gradient_batch": 14000, "curvature_batch": 3500}
    kw.update(overrides)
    return HessianFree(**kw)


def stochastic_hf(**overrides: Any) -> HessianFree:
    """Seed 001's stochastic HF (Kiros 2013): B_g = 320, B_c = 32, gentle λ changes
    (×1.01 up / ×0.99 down instead of 3/2 and 2/3) so one noisy batch cannot swing λ."""
    kw: dict[str, Any] = {
        "gradient_batch": 320,
        "curvature_batch": 32,
        "lm": LevenbergMarquardt(decrease=0.99, increase=1.01),
    }
    kw.update(overrides)
    return HessianFree(**kw)
