"""Cost accounting in forward-pass equivalents (Krause et al., seed 001, Sec. "Computational
cost measures").

Every evaluation an objective makes is recorded here, by the objective itself, so that no
optimizer can forget one (line-search evaluations included). Units per sequence:

    loss only                    1   (one forward pass)
    loss and gradient            3   (forward + backward ≈ 2 forward passes)
    curvature-vector product     4   (Gauss–Newton or Hessian, Schraudolph 2002 / Pearlmutter)
    curvature set-up             3   (the forward + create-graph backward a cached reference
                                      operator is built on; seed 001 does not count it), 1 for
                                      the fast products' set-up (one forward pass kept)
    per-sample gradients         3   (per sequence; Martens' diagonal preconditioner)

    P_D += units · n_seq   (batch dependent: sequential hardware)
    P_I += units           (batch independent: fully parallel hardware)

so that with I_t iterations of one gradient each and I_c curvature products,
P_D = 3·I_t·B_g + 4·I_c·B_c and P_I = 3·I_t + 4·I_c, as in seed 001. A finite-difference
Hessian–vector product is one extra gradient and is recorded as a curvature product of 3 units
(6 for the central difference).

Unequal lengths: seed 001 counts sequences of one fixed length. By default a sequence counts
as 1 whatever its length; an objective built with ``t_ref`` counts each sequence as
``length / t_ref`` instead (so a batch of lengths 50 and 150 with t_ref=100 counts 2.0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["CostCounter", "UNITS"]

UNITS = {"fun": 1.0, "grad": 3.0, "curv": 4.0, "curv_setup": 3.0, "per_sample": 3.0}


@dataclass
class CostCounter:
    """Running totals of what was computed. Optimizers read differences of snapshots."""

    n_fun: int = 0  # loss-only evaluations
    n_grad: int = 0  # loss-and-gradient evaluations
    n_curv: int = 0  # curvature-vector products (GN, Hessian, finite-difference)
    n_curv_setup: int = 0  # cached curvature operators built
    n_per_sample: int = 0  # per-sample gradient sweeps
    samples_grad: float = 0.0  # sequences that went into gradients (samples seen)
    samples_curv: float = 0.0  # sequences that went into curvature products
    p_d: float = 0.0  # batch-dependent forward passes
    p_i: float = 0.0  # batch-independent forward passes

    def record(self, kind: str, n_seq: float, units: float | None = None) -> None:
        """Record one evaluation of ``kind`` over ``n_seq`` (length-weighted) sequences."""
        if kind not in UNITS:
            raise ValueError(f"unknown cost kind {kind!r}; valid kinds: {sorted(UNITS)}")
        u = UNITS[kind] if units is None else float(units)
        setattr(self, f"n_{kind}", getattr(self, f"n_{kind}") + 1)
        if kind == "grad":
            self.samples_grad += n_seq
        elif kind == "curv":
            self.samples_curv += n_seq
        self.p_d += u * n_seq
        self.p_i += u

    def snapshot(self) -> CostCounter:
        return CostCounter(**asdict(self))

    def __sub__(self, other: CostCounter) -> CostCounter:
        return CostCounter(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )

    def __add__(self, other: CostCounter) -> CostCounter:
        return CostCounter(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
