"""No module of lstmlab reaches into another's private names (docs/design.md, "The engine's
modules"): what crosses a module boundary is public, with a docstring.

Read from the source with ``ast`` (nothing is imported): in every ``lstmlab/**/*.py``,

* ``from M import _name`` (M another lstmlab module, or a relative import) is refused;
* ``N._name``, where N was bound by an import of an lstmlab module or object, is refused;
* ``from M import _name`` from a module outside lstmlab (torch's private helpers) is allowed
  only where listed in ``OUTSIDE`` below, each with its reason.

Class attributes reached through an imported class are refused the same way; the few that stand
today are listed in ``KNOWN`` (to be made public in their own change). An entry of either list
that no longer occurs fails too, so the lists stay true.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lstmlab"

# (file, module, name): torch's private helpers lstmlab imports, and why
OUTSIDE = {
    # torch's strong-Wolfe line search, shared by the L-BFGS optimizer (no public path)
    ("optim/line_search.py", "torch.optim.lbfgs", "_strong_wolfe"),
    # whether torch's dynamo ONNX exporter is running (guarded: None on another torch)
    ("nn/dropin.py", "torch.onnx._internal.exporter", "_flags"),
}

# (file, "Name._attr"): private class attributes reached from another module, still standing
KNOWN = {
    ("nn/dropin.py", "_LabLSTM._spec"),  # LSTM._spec on a shim: the drop-in's CellSpecs
    ("nn/ops.py", "_LabGRU._step"),  # the baselines' step on a shim: the reference twin
    ("nn/ops.py", "_LabRNN._step"),
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_of(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, path: Path, root: Path) -> str:
    """The module an ``ImportFrom`` names, relative imports resolved against ``path``."""
    if not node.level:
        return node.module or ""
    pkg = _module_of(path, root).split(".")
    if path.name != "__init__.py":
        pkg = pkg[:-1]
    base = pkg[: len(pkg) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def reaches(path: Path, root: Path = PACKAGE) -> tuple[list[str], set, set]:
    """(violations, OUTSIDE entries used, KNOWN entries used) of one source file of the
    package at ``root``."""
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad, outside, known = [], set(), set()
    ours: set[str] = set()  # local names bound to lstmlab modules or objects
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = _absolute(node, path, root)
            inside = module == "lstmlab" or module.startswith("lstmlab.")
            for a in node.names:
                if inside:
                    ours.add(a.asname or a.name)
                if not _private(a.name):
                    continue
                if inside:
                    bad.append(f"{rel}:{node.lineno}: from {module} import {a.name}")
                elif (rel, module, a.name) in OUTSIDE:
                    outside.add((rel, module, a.name))
                else:
                    bad.append(f"{rel}:{node.lineno}: from {module} import {a.name} (not listed)")
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "lstmlab":
                    ours.add(a.asname or parts[0])
                    if any(_private(p) for p in parts):
                        bad.append(f"{rel}:{node.lineno}: import {a.name}")
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        chain, v = [node.attr], node.value
        while isinstance(v, ast.Attribute):
            chain.append(v.attr)
            v = v.value
        if isinstance(v, ast.Name) and v.id in ours:
            text = ".".join([v.id, *reversed(chain)])
            if (rel, text) in KNOWN:
                known.add((rel, text))
            else:
                bad.append(f"{rel}:{node.lineno}: {text}")
    return bad, outside, known


def test_no_module_reaches_into_another_modules_private_names():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the package itself, not an empty folder
    bad, outside, known = [], set(), set()
    for path in files:
        b, o, k = reaches(path)
        bad += b
        outside |= o
        known |= k
    assert not bad, "private names reached across modules:\n" + "\n".join(bad)
    assert outside == OUTSIDE, f"listed but no longer imported: {OUTSIDE - outside}"
    assert known == KNOWN, f"listed but no longer reached: {KNOWN - known}"


def test_the_check_sees_each_kind_of_reach(tmp_path):
    """The checker itself: an import of a private lstmlab name, a relative one, a private
    attribute of an imported lstmlab module, and an unlisted private torch name are caught;
    public names and a module's own private names are not."""
    pkg = tmp_path / "lstmlab" / "engines"
    pkg.mkdir(parents=True)
    src = pkg / "probe.py"
    src.write_text(
        "from lstmlab.engines.gates import _OFFSETS\n"
        "from .layout import _FORCED\n"
        "from lstmlab.engines import rop\n"
        "from torch.optim.lbfgs import _cubic_interpolate\n"
        "from lstmlab.engines.gates import activation\n"
        "_mine = 1\n"
        "x = rop._TAPES, activation, _mine\n"
    )
    bad, _, _ = reaches(src, tmp_path / "lstmlab")
    text = "\n".join(bad)
    assert "import _OFFSETS" in text
    assert "from lstmlab.engines.layout import _FORCED" in text
    assert "rop._TAPES" in text
    assert "_cubic_interpolate (not listed)" in text
    assert len(bad) == 4, text
