"""One layer-direction of an LSTM: its parameters and one plain time step.

Per step (SPEC S1; Greff et al. for the vanilla form, gates shared by the cells of a block):

    z_t = g( W_z x_t + R_z y_{t-1} + b_z )                               block input (H)
    i_t = σ_α( W_i x_t + R_i y_{t-1} + P_i c_{t-1} + Q_i q_{t-1} + b_i )  input gate
    f_t = σ_α( W_f x_t + R_f y_{t-1} + P_f c_{t-1} + Q_f q_{t-1} + b_f )  forget gate
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t                     (gates broadcast over a block)
    o_t = σ_α( W_o x_t + R_o y_{t-1} + P_o c_t     + Q_o q_{t-1} + b_o )  output gate
    ŷ_t = o_t ⊙ h(c_t);   y_t = W_p ŷ_t with a projection (LSTMP), else y_t = ŷ_t

P maps the cells of a block to the block's gate: ``peep_<gate>`` has shape (blocks,
cells_per_block), so (P c)_j = Σ_k P[j, k] c[j, k]. q_{t-1} = [i, f, o]_{t-1} (the gates that
exist) feeds every gate through Q with full gate recurrence. Variants:

- mLSTM (Krause et al.): m_t = (W_mx x_t) ⊙ (W_mh y_{t-1}) and R·y_{t-1} becomes R·m_t;
- F-LSTM (seed 004): [W | R] = W2 · W1 of rank r, parameters ``W1`` (r, I + Hr), ``W2`` (D, r);
- G-LSTM (seed 004): k groups, group j maps its slice of x and of y_{t-1} to its slice of z and
  of every gate: parameters ``Wg`` (k, D/k, I/k), ``Rg`` (k, D/k, Hr/k).

Weight layout: the rows of W, R, b (and of the assembled F/G matrices) are
``z (H) | i (blocks) | f (blocks) | o (blocks)`` with absent gates left out (see ``CellSpec``).

``step`` is the obviously-correct single step used by the autograd reference engine (F-LSTM and
G-LSTM through their structure: W1 then W2, k group products); ``weights`` hands the engines the
same parameters as dense matrices, or with ``structured=True`` F-LSTM's factors and G-LSTM's
groups as they are (what the bptt engine runs on, ``engines/structured.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lstmlab.nn.activations import activate, gate
from lstmlab.nn.variants import CellSpec

INITS = ("uniform", "gaussian", "sparse", "torch")
_DEFAULT_SCALE = {"uniform": 0.1, "gaussian": 0.1, "sparse": 1.0, "torch": None}


class LSTMCell(nn.Module):
    """Parameters and one time step of one LSTM layer-direction (see module docstring)."""

    def __init__(
        self,
        spec: CellSpec,
        *,
        init: str = "uniform",
        init_scale: float | None = None,
        sparse_connections: int = 15,
        gate_bias: dict[str, float | Sequence[float]] | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
    ):
        super().__init__()
        self.spec = spec
        s = spec
        I, H, Hr, D = s.input_size, s.hidden_size, s.recurrent_size, s.n_pre
        kw = dict(dtype=dtype, device=device)

        def P(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape, **kw))

        if s.factorization_rank is not None:
            self.W1 = P(s.factorization_rank, I + Hr)  # (r, I + Hr)
            self.W2 = P(D, s.factorization_rank)  # (D, r)
        elif s.groups > 1:
            k = s.groups
            self.Wg = P(k, D // k, I // k)
            self.Rg = P(k, D // k, Hr // k)
            self.register_buffer("group_rows", group_rows(s), persistent=False)
        else:
            self.W = P(D, I)
            self.R = P(D, s.multiplicative_size or Hr)
        if s.multiplicative_size is not None:
            M = s.multiplicative_size
            self.W_mx = P(M, I)
            self.W_mh = P(M, Hr)
        self.b = P(D) if s.bias else None
        for g in s.gates:
            if s.peepholes:
                setattr(self, f"peep_{g}", P(s.blocks, s.cells_per_block))
        if s.fgr:
            self.Q = P(s.n_q, s.n_q)
        if s.proj_size is not None:
            self.W_p = P(s.proj_size, H)
        self.reset_parameters(init, init_scale, sparse_connections, gate_bias, generator)

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def reset_parameters(
        self,
        init: str = "uniform",
        init_scale: float | None = None,
        sparse_connections: int = 15,
        gate_bias: dict[str, float | Sequence[float]] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Initialise: ``uniform`` U[-s, s] (1997, s = 0.1), ``gaussian`` N(0, s²) (Greff,
        s = 0.1), ``sparse`` (Martens 2010: each unit gets ``sparse_connections`` non-zero
        incoming weights ~ N(0, s²), s = 1; peepholes and Q start at 0), ``torch``
        U[-1/√H, 1/√H] as ``torch.nn.LSTM``, whose effective bias b_ih + b_hh is the sum of
        two such draws: so is ``b`` here. Otherwise biases start at 0. Then the per-gate
        offsets of ``gate_bias`` are added (e.g. ``{"i": [-1, -3, -6]}`` per block as in
        1997, or ``{"f": 1.0}``)."""
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        s = self.spec
        scale = _DEFAULT_SCALE[init] if init_scale is None else float(init_scale)
        if init == "torch":
            scale = 1.0 / math.sqrt(s.hidden_size)
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"init_scale must be > 0, got {init_scale!r}")
        if sparse_connections < 1:
            raise ValueError(f"sparse_connections must be >= 1, got {sparse_connections!r}")

        def dense(t: Tensor) -> None:
            if init == "gaussian":
                t.copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype) * scale)
            elif init == "sparse":
                t.copy_(_sparse(t.shape, sparse_connections, scale, generator, t.dtype))
            else:
                t.copy_((torch.rand(t.shape, generator=generator, dtype=t.dtype) * 2 - 1) * scale)

        for name, p in self.named_parameters(recurse=False):
            if name == "b" and init == "torch":  # torch.nn.LSTM's b_ih + b_hh: two draws
                dense(p)
                second = torch.empty_like(p)
                dense(second)
                p.add_(second)
            elif name == "b":
                p.zero_()
            elif init == "sparse" and (name.startswith("peep_") or name == "Q"):
                p.zero_()
            elif name in ("W", "R") and init == "sparse":
                # sparse over all incoming connections of a unit: the columns of [W | R]
                both = _sparse(
                    (s.n_pre, self.W.shape[1] + self.R.shape[1]),
                    sparse_connections,
                    scale,
                    generator,
                    p.dtype,
                )
                self.W.copy_(both[:, : self.W.shape[1]])
                self.R.copy_(both[:, self.W.shape[1] :])
            elif name == "Wg" and init == "sparse":
                k = s.groups
                both = torch.stack(
                    [
                        _sparse(
                            (p.shape[1], p.shape[2] + self.Rg.shape[2]),
                            sparse_connections,
                            scale,
                            generator,
                            p.dtype,
                        )
                        for _ in range(k)
                    ]
                )
                self.Wg.copy_(both[..., : p.shape[2]])
                self.Rg.copy_(both[..., p.shape[2] :])
            elif name == "Rg" and init == "sparse":
                continue  # set together with Wg
            else:
                dense(p)
        if gate_bias:
            if self.b is None:
                raise ValueError("gate_bias needs bias=True")
            if not isinstance(gate_bias, dict):
                raise ValueError(
                    f"gate_bias must be a table of gate -> bias (e.g. {{'i': -1.0}}), "
                    f"got {gate_bias!r}"
                )
            for g, value in gate_bias.items():
                if g not in ("i", "f", "o"):
                    raise ValueError(f"gate_bias keys must be among ['i', 'f', 'o'], got {g!r}")
                if g not in s.gates:
                    raise ValueError(
                        f"gate_bias for gate {g!r}, but this variant has no {g!r} gate "
                        f"(gates: {list(s.gates)})"
                    )
                try:
                    v = torch.as_tensor(value, dtype=self.b.dtype)
                except (TypeError, ValueError, RuntimeError):
                    v = None
                if v is not None and not bool(torch.isfinite(v).all()):
                    raise ValueError(f"gate_bias[{g!r}] must be finite, got {value!r}")
                if v is None or v.dim() > 1 or (v.dim() == 1 and v.numel() != s.blocks):
                    raise ValueError(
                        f"gate_bias[{g!r}] must be a number or {s.blocks} numbers "
                        f"(one per block), got {value!r}"
                    )
                self.b[s.gate_slice(g)] += v.to(self.b.device)

    # ------------------------------------------------------------------ dense weights
    def weights(self, structured: bool = False) -> dict[str, Tensor | None]:
        """The parameters as dense tensors for the engines (differentiable assembly):

        W (D, I), R (D, Hr or M), b (D,) or None, W_mx (M, I), W_mh (M, Hr) for mLSTM,
        peep {gate: (blocks, cells_per_block)}, Q (n_q, n_q), W_p (p, H).

        ``structured=True``: F-LSTM's W and R are its factors W1 (r, I + Hr) and W2 (D, r),
        G-LSTM's its groups Wg (k, D/k, I/k) and Rg (k, D/k, Hr/k), as they are — what the
        bptt engine runs on (``engines/structured.py``); no dense matrix is assembled."""
        s = self.spec
        if structured and s.factorization_rank is not None:
            W, R = self.W1, self.W2
        elif structured and s.groups > 1:
            W, R = self.Wg, self.Rg
        elif s.factorization_rank is not None:
            WR = self.W2 @ self.W1  # (D, I + Hr)
            W, R = WR[:, : s.input_size], WR[:, s.input_size :]
        elif s.groups > 1:
            W = torch.block_diag(*self.Wg)[self.group_rows]  # (D, I), rows in z|i|f|o order
            R = torch.block_diag(*self.Rg)[self.group_rows]  # (D, Hr)
        else:
            W, R = self.W, self.R
        return dict(
            W=W,
            R=R,
            b=self.b,
            W_mx=getattr(self, "W_mx", None),
            W_mh=getattr(self, "W_mh", None),
            peep={g: getattr(self, f"peep_{g}") for g in s.gates} if s.peepholes else {},
            Q=getattr(self, "Q", None),
            W_p=getattr(self, "W_p", None),
        )

    # ------------------------------------------------------------------ one step
    def init_state(self, batch: int, dtype=None, device=None) -> tuple[Tensor, Tensor, Tensor]:
        """Zero state (y, c, q): (B, Hr), (B, H), (B, n_q)."""
        s = self.spec
        p = next(self.parameters())
        kw = dict(dtype=dtype or p.dtype, device=device or p.device)
        return (
            torch.zeros(batch, s.recurrent_size, **kw),
            torch.zeros(batch, s.hidden_size, **kw),
            torch.zeros(batch, s.n_q, **kw),
        )

    def step(
        self,
        x: Tensor,
        state: tuple[Tensor, Tensor, Tensor],
        alpha: dict[str, float],
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """One time step, written plainly: x (B, I), state (y, c, q) -> y_t, (y_t, c_t, q_t)."""
        s = self.spec
        y_prev, c_prev, q_prev = state
        B, H, nb, cpb = x.shape[0], s.hidden_size, s.blocks, s.cells_per_block

        if s.factorization_rank is not None:
            a = torch.cat([x, y_prev], dim=1) @ self.W1.T @ self.W2.T
        elif s.groups > 1:
            k = s.groups
            xg = x.reshape(B, k, -1)  # (B, k, I/k)
            yg = y_prev.reshape(B, k, -1)  # (B, k, Hr/k)
            ag = torch.einsum("bki,kdi->bkd", xg, self.Wg) + torch.einsum(
                "bkh,kdh->bkd", yg, self.Rg
            )  # (B, k, D/k) in group-major order
            a = ag.reshape(B, -1)[:, self.group_rows]
        elif s.multiplicative_size is not None:
            m = (x @ self.W_mx.T) * (y_prev @ self.W_mh.T)  # (B, M)
            a = x @ self.W.T + m @ self.R.T
        else:
            a = x @ self.W.T + y_prev @ self.R.T
        if self.b is not None:
            a = a + self.b
        if s.fgr:
            a = torch.cat([a[:, :H], a[:, H:] + q_prev @ self.Q.T], dim=1)

        def peep(g: str, c: Tensor) -> Tensor:  # (B, blocks)
            if not s.peepholes:
                return 0.0
            return (c.reshape(B, nb, cpb) * getattr(self, f"peep_{g}")).sum(-1)

        z = activate(s.g, a[:, :H])
        acts = {}
        for g in ("i", "f"):
            if g in s.gates:
                acts[g] = gate(a[:, s.gate_slice(g)] + peep(g, c_prev), alpha[g])
        i = acts.get("i", torch.ones(B, nb, dtype=x.dtype, device=x.device))
        if s.coupled:
            f = 1.0 - i
        else:
            f = acts.get("f", torch.ones(B, nb, dtype=x.dtype, device=x.device))
        c = f.unsqueeze(-1) * c_prev.reshape(B, nb, cpb) + (i.unsqueeze(-1) * z.reshape(B, nb, cpb))
        c = c.reshape(B, H)
        if "o" in s.gates:
            acts["o"] = gate(a[:, s.gate_slice("o")] + peep("o", c), alpha["o"])
            o = acts["o"]
        else:
            o = torch.ones(B, nb, dtype=x.dtype, device=x.device)
        y_hat = (o.unsqueeze(-1) * activate(s.h, c).reshape(B, nb, cpb)).reshape(B, H)
        y = y_hat @ self.W_p.T if s.proj_size is not None else y_hat
        q = torch.cat([acts[g] for g in s.gates], dim=1) if s.gates else q_prev
        return y, (y, c, q)

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"input_size={s.input_size}, hidden_size={s.hidden_size}, "
            f"cells_per_block={s.cells_per_block}, gates={''.join(s.gates)}"
        )


def group_rows(s: CellSpec) -> Tensor:
    """For each global pre-activation row (z|i|f|o order), its row in block_diag(Wg) order."""
    k, H, nb = s.groups, s.hidden_size, s.blocks
    Hk, nbk = H // k, nb // k
    Dg = s.n_pre // k
    rows = torch.empty(s.n_pre, dtype=torch.long)
    for j in range(k):
        for r in range(Dg):
            if r < Hk:
                glob = j * Hk + r
            else:
                gi, off = divmod(r - Hk, nbk)
                glob = H + gi * nb + j * nbk + off
            rows[glob] = j * Dg + r
    return rows


def _sparse(shape, k: int, scale: float, generator, dtype) -> Tensor:
    """Each row gets min(k, fan_in) non-zero entries ~ N(0, scale²) at random columns."""
    rows, cols = shape
    k = min(k, cols)
    out = torch.zeros(rows, cols, dtype=dtype)
    for r in range(rows):
        idx = torch.randperm(cols, generator=generator)[:k]
        out[r, idx] = torch.randn(k, generator=generator, dtype=dtype) * scale
    return out
