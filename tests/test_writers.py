"""Every file dinokit writes goes through dinokit/files.py (temp file beside the target, fsync,
rename; JSON without NaN): no module hand-rolls its own temp-and-rename or writes an output in
place. The scan reads the source (a call that writes in place is a call to one of these)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import dinokit

PACKAGE = Path(dinokit.__file__).parent
OTHERS: tuple[str, ...] = ()  # every package, the studies included, is scanned
# (module, function): whole-folder renames files.py does not do
ALLOWED = {
    ("data/shapes.py", "write_shapes"),  # the dataset is built in a temp folder renamed as a whole
    ("data/shapes.py", "shapes_dir"),  # a stale dataset folder is moved aside before removal
}
IN_PLACE = {"mkstemp", "mkdtemp", "NamedTemporaryFile", "write_text", "write_bytes"}
RENAMES = {"replace", "rename"}  # os.replace / os.rename (not str.replace)


def _writes(tree: ast.AST) -> list[tuple[str, int, str]]:
    """(function, line, call) for each call that writes a file without files.py."""
    found = []
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        safe = _files_targets(func)
        for node in ast.walk(func):
            if not isinstance(node, ast.Call) or any(_names(a) in safe for a in node.args):
                continue  # writes into a temp path or handle that files.py gave
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            method = isinstance(f, ast.Attribute)  # path.write_text(...); a bare write_text is files.py's
            if (name in IN_PLACE and method and owner != "files") or (name in RENAMES and owner == "os"):
                found.append((func.name, node.lineno, name))
            elif name == "open" and owner in ("", "os") and any(
                isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax")
                for a in [*node.args[1:], *(k.value for k in node.keywords if k.arg == "mode")]
            ):
                found.append((func.name, node.lineno, "open for writing"))
            elif name == "save" and owner in ("onnx", "torch"):
                found.append((func.name, node.lineno, f"{owner}.save"))
            elif name == "dump" and owner == "json":
                found.append((func.name, node.lineno, "json.dump"))
    return found


def _names(arg: ast.AST) -> str:
    """The variable an argument names: `tmp` or `str(tmp)`."""
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name) and arg.func.id == "str" and arg.args:
        arg = arg.args[0]
    return arg.id if isinstance(arg, ast.Name) else ""


def _called(node: ast.AST, names: set[str]) -> bool:
    f = node.func if isinstance(node, ast.Call) else None
    return (isinstance(f, ast.Attribute) and f.attr in names) or (isinstance(f, ast.Name) and f.id in names)


def _files_targets(func: ast.AST) -> set[str]:
    """Names bound to files.py's temp paths and handles: `with atomic_path(p) as tmp`, `with
    atomic_open(p) as fh`, and the parameter of a `write_with(p, lambda tmp: ...)` writer."""
    names = set()
    for node in ast.walk(func):
        if isinstance(node, ast.withitem) and _called(node.context_expr, {"atomic_path", "atomic_open"}):
            if isinstance(node.optional_vars, ast.Name):
                names.add(node.optional_vars.id)
        if _called(node, {"write_with"}):
            names |= {a.arg for arg in node.args if isinstance(arg, ast.Lambda) for a in arg.args.args}
    return names


def test_no_module_writes_a_file_outside_files_py():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "files.py" or rel.startswith(OTHERS):
            continue
        for func, line, call in _writes(ast.parse(path.read_text())):
            if (rel, func) not in ALLOWED:
                offenders.append(f"{rel}:{line} {func}: {call}")
    assert not offenders, "\n".join(offenders)


def test_converted_json_has_no_nan(tmp_path):
    """The VOC/YOLO conversion cache is JSON: a NaN (from a float field) is null, never the invalid `NaN`."""
    from dinokit.data import formats

    assert not hasattr(formats, "write_json_atomic")  # one writer: files.write_json
    from dinokit.files import write_json

    path = write_json(tmp_path / "c.json", {"images": [{"id": 1, "score": float("nan")}]})
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))


def test_a_failed_onnx_export_leaves_the_previous_file(tmp_path, monkeypatch):
    from tests.services import extra

    onnx = extra("onnx")
    extra("onnxruntime")
    from dinokit.checkpoint import make_checkpoint, save_checkpoint
    from dinokit.config import apply_overrides, load_preset
    from dinokit.infer.export import export_onnx
    from dinokit.model.dino import build_model
    from tests.train_helpers import MICRO_MODEL

    cfg = apply_overrides(load_preset("tiny"), [*MICRO_MODEL, "data.image_size=64"])
    cfg.model.num_classes = 2
    model = build_model(cfg.model, load_weights=False)
    ckpt = save_checkpoint(make_checkpoint(model.state_dict(), cfg, ["a", "b"], [1, 2]), tmp_path / "m.pt")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous model")

    def broken(*args, **kwargs):
        raise onnx.checker.ValidationError("broken graph")

    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(Exception, match="broken graph"):
        export_onnx(ckpt, out)
    assert out.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt"]
