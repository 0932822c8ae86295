"""Reproducible random streams for the task generators.

Why not ``torch.Generator`` or ``numpy.random.Generator`` methods: neither promises that a
given seed yields the same numbers on every version (NumPy's distribution methods may change
between releases; torch's CPU and CUDA streams differ). Two things *are* stable: NumPy's
``SeedSequence`` seeding and the raw 64-bit output of the ``PCG64`` bit generator (NEP 19).
A ``Stream`` therefore reads raw words only and turns them into numbers here:

    u = (word >> 11) * 2**-53          uniform on [0, 1) with 53 random bits
    k = low + floor(u * (high - low))  integer on [low, high) (bias < 2**-40 for high-low < 2**13)
    permutation(n) = argsort of n uniforms (stable sort)

Every draw is vectorized; the same (seed, keys) give the same numbers on every machine.
Different keys (e.g. the split name) give statistically independent streams, which is how
train, valid and test are kept apart.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["Stream"]


def _key_word(key: str | int) -> int:
    """A 32-bit integer from a key, stable across Python runs (unlike ``hash``)."""
    if isinstance(key, int):
        return key & 0xFFFFFFFF
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "little")


class Stream:
    """A seeded stream of random numbers, identical on every machine.

    ``Stream(seed, "adding", "1997", "train")`` and ``Stream(seed, ..., "test")`` are
    independent; the seed must be a non-negative integer.
    """

    def __init__(self, seed: int, *keys: str | int) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        seq = np.random.SeedSequence(entropy=seed, spawn_key=tuple(_key_word(k) for k in keys))
        self._bits = np.random.PCG64(seq)

    def raw(self, n: int) -> np.ndarray:
        """``n`` raw 64-bit words (uint64)."""
        return self._bits.random_raw(int(n))

    def uniform(self, shape: int | tuple[int, ...], low: float = 0.0, high: float = 1.0):
        """float64 array uniform on [low, high)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        n = int(np.prod(shape, dtype=np.int64))
        u = (self.raw(n) >> np.uint64(11)).astype(np.float64) * (2.0**-53)
        return (low + (high - low) * u).reshape(shape)

    def integers(self, low, high, shape: int | tuple[int, ...]) -> np.ndarray:
        """int64 array uniform on [low, high); ``low``/``high`` may be arrays that broadcast."""
        low = np.asarray(low, dtype=np.int64)
        high = np.asarray(high, dtype=np.int64)
        if np.any(high <= low):
            raise ValueError("Stream.integers needs high > low")
        u = self.uniform(shape)
        k = low + np.floor(u * (high - low).astype(np.float64)).astype(np.int64)
        return np.minimum(k, high - 1)  # guards the (impossible in exact arithmetic) u*(h-l)=h-l

    def permutation(self, n: int) -> np.ndarray:
        """A uniformly random permutation of ``range(n)`` (int64)."""
        return np.argsort(self.uniform(n), kind="stable")

    def balanced(self, n: int, k: int) -> np.ndarray:
        """``n`` labels in ``range(k)``, each appearing ``n // k`` or ``n // k + 1`` times,
        in random order (Sutskever's generators balance classes the same way)."""
        return (np.arange(n, dtype=np.int64) % k)[self.permutation(n)]
