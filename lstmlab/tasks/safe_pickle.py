"""``safe_unpickle``: read plain data from a pickle without ever running code from it.

A pickle runs code by naming a global (``module.name``) and calling it (``REDUCE``) or by
handing state to its ``__setstate__`` (``BUILD``). This unpickler resolves no global by import:
``find_class`` answers from a fixed table, and everything else is refused with a one-line
``UnpicklingError`` that names the global. The table holds

* Python 2 and 3 spellings of ``set`` and ``frozenset`` (plain containers without an opcode of
  their own in protocols < 4), and the latin-1 encoder and the argument-less ``bytes()``
  protocols < 3 use for ``bytes``;
* numpy's array and scalar pickling (what the usual JSB Chorales / Nottingham / MuseData
  ``.pkl`` files hold: numpy scalars and arrays as pitches), under numpy 1 (``numpy.core``),
  numpy 2 (``numpy._core``) and Python 2 spellings. None of numpy's own functions is called:
  each name maps to a small function here that accepts only what numpy writes for a plain
  numeric array or scalar (a dtype of kind bool / int / uint / float / complex given by its
  short code such as ``'f8'``, a byte order, a shape, raw bytes of exactly the right length)
  and builds the value with ``np.frombuffer``. Object, string, structured and datetime dtypes,
  subclasses of ``ndarray`` and any other argument are refused.

``numpy.ndarray`` and ``numpy.dtype`` resolve to inert placeholders (not callable, no state
but what the functions here read), and an array rebuilt through ``BUILD`` is a placeholder
until ``safe_unpickle`` swaps every placeholder in the result for the array or dtype it holds.
Written by hand: the standard library has no restricted unpickler, and the point is to allow
exactly numpy's plain-data path and nothing more.
"""

from __future__ import annotations

import io
import pickle
import re
from typing import Any

import numpy as np

__all__ = ["safe_unpickle", "PLAIN_MESSAGE"]

PLAIN_MESSAGE = (
    "only plain containers and numbers (numpy numeric arrays and scalars included) are read "
    "from pickles (loading a class or function could run code)"
)
_DTYPE_CODE = re.compile(r"[<>|=]?(?:[?b]1|[iu][1248]|f[248]|c(?:8|16))")  # numpy's short codes


def _refuse(what: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"refers to {what}; {PLAIN_MESSAGE}")


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocols 0-2 call to rebuild ``bytes`` (``_codecs.encode(text, "latin1")``)."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refers to _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """What protocols 0-2 call to rebuild ``b""`` (``bytes()``, no argument)."""
    if args:
        raise _refuse("bytes with arguments")
    return b""


def _raw(data: Any) -> bytes:
    """Raw array bytes as pickled: bytes, a bytearray (protocol 5), or a latin-1 str (Python 2)."""
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("latin1")
    raise _refuse(f"numpy data of type {type(data).__name__}")


class _NdarrayClass:
    """What ``numpy.ndarray`` resolves to: a marker ``_reconstruct`` accepts, nothing more."""

    __slots__ = ()


_NDARRAY = _NdarrayClass()


class _Dtype:
    """``numpy.dtype(code, align, copy)`` followed by ``BUILD`` with its state (byte order)."""

    __slots__ = ("code", "order")

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(code, str) or not _DTYPE_CODE.fullmatch(code):
            raise _refuse(f"numpy.dtype({code!r}) (only numeric dtypes are read)")
        self.code, self.order = code, "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise _refuse("a numpy dtype with an unknown state")
        if any(x is not None for x in state[2:5]):  # sub-arrays, field names, fields
            raise _refuse("a structured numpy dtype")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.code)
        return dtype.newbyteorder(self.order) if self.order in "<>" else dtype


def _dtype_of(d: Any) -> np.dtype:
    if not isinstance(d, _Dtype):
        raise _refuse(f"numpy data with dtype {type(d).__name__}")
    return d.resolve()


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise _refuse(f"a numpy array of shape {shape!r}")
    return shape


def _array(raw: bytes, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    if len(raw) != n * dtype.itemsize:
        raise pickle.UnpicklingError(
            f"numpy array data of {len(raw)} bytes does not fit shape {shape} of {dtype}"
        )
    flat = np.frombuffer(raw, dtype=dtype, count=n)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


class _ArrayStub:
    """``_reconstruct(ndarray, (0,), b'b')``'s value; ``BUILD`` gives it the array's state
    ``(version, shape, dtype, is_fortran, raw bytes)``; ``safe_unpickle`` swaps it for
    ``self.array``."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _refuse("a numpy array with an unknown state")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(fortran, bool | int):
            raise _refuse("a numpy array with an unknown state")
        self.array = _array(_raw(raw), _dtype_of(dtype), _shape(shape), bool(fortran))


def _reconstruct(cls: Any, shape: Any = (0,), typecode: Any = b"b") -> _ArrayStub:
    if cls is not _NDARRAY:  # a subclass (matrix, masked array, ...) is another global: refused
        raise _refuse("numpy's _reconstruct of something that is not a plain ndarray")
    return _ArrayStub()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Protocol 5's array: ``_frombuffer(buffer, dtype, shape, order)``."""
    if order not in ("C", "F"):
        raise _refuse(f"a numpy array of order {order!r}")
    return _array(_raw(buf), _dtype_of(dtype), _shape(shape), order == "F")


def _scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar(dtype, raw bytes)``: one numpy number."""
    dt = _dtype_of(dtype)
    raw = _raw(data)
    if len(raw) != dt.itemsize:
        raise pickle.UnpicklingError(f"a numpy {dt} scalar of {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dt, count=1)[0]


_NUMPY: dict[str, Any] = {"_reconstruct": _reconstruct, "scalar": _scalar}
_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype,
    **{(f"numpy.{core}.multiarray", k): f for core in ("core", "_core") for k, f in _NUMPY.items()},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _frombuffer for core in ("core", "_core")},
}


class _PlainUnpickler(pickle.Unpickler):
    """Plain containers, numbers, strings, bytes and numpy numeric data; every other global is
    refused (module docstring)."""

    def find_class(self, module: str, name: str):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _refuse(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("uses persistent ids; only plain data is read from pickles")


def _swap(obj: Any, seen: dict[int, Any]) -> Any:
    """``obj`` with every placeholder replaced by the numpy value it stands for."""
    key = id(obj)
    if key in seen:
        return seen[key]
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise _refuse("a numpy array without its data")
        out: Any = obj.array
    elif isinstance(obj, _Dtype):
        out = obj.resolve()
    elif isinstance(obj, _NdarrayClass):
        raise _refuse("numpy.ndarray itself")
    elif isinstance(obj, list):
        out = seen[key] = []
        out.extend(_swap(v, seen) for v in obj)
        return out
    elif isinstance(obj, dict):
        out = seen[key] = {}
        out.update((_swap(k, seen), _swap(v, seen)) for k, v in obj.items())
        return out
    elif isinstance(obj, tuple):
        out = tuple(_swap(v, seen) for v in obj)
    elif isinstance(obj, set | frozenset):
        out = type(obj)(_swap(v, seen) for v in obj)
    else:
        out = obj
    seen[key] = out
    return out


def safe_unpickle(data: bytes) -> object:
    """Unpickle ``data`` admitting only plain containers, numbers, strings, bytes and numpy
    numeric arrays and scalars; no code from the pickle runs. Raises
    ``pickle.UnpicklingError`` (among others) for anything else."""
    return _swap(_PlainUnpickler(io.BytesIO(data), encoding="latin1").load(), {})
