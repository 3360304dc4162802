"""Every file dinokit writes goes through dinokit/files.py (temp file beside the target, fsync,
rename; JSON without NaN; never over a file the command reads): no module hand-rolls its own
temp-and-rename or writes an output in place. The scan reads the syntax tree of every module (not
its text): a call that writes a file is one of the shapes below, and a test proves it catches each
of them in a synthetic snippet, and none of the ways of writing through files.py."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import dinokit

PACKAGE = Path(dinokit.__file__).parent
# (module, function, call): whole-folder renames files.py does not do, writers handed a temp path,
# and dinokit's own `save` methods (which write through files.py themselves; scanned in their modules)
ALLOWED = {
    ("data/shapes.py", "write_shapes", "tempfile.mkdtemp"): "the dataset is built in a temp folder ...",
    ("data/shapes.py", "write_shapes", "os.replace"): "... renamed as a whole",
    ("data/shapes.py", "write_shapes", "(tmp / 'annotations' / f'instances_{split}.json').write_text"): "... its JSON",
    ("data/shapes.py", "_write_split", "picture.save"): "... its images",
    ("data/shapes.py", "shapes_dir", "os.replace"): "a stale dataset folder is moved aside before removal",
    ("infer/video.py", "_Writer.__init__", "open for writing"): "the temp path predict_video's atomic_path gave",
    ("cli.py", "predict", "det.save"): "Detections.save: write_with",
    ("explain_cli.py", "explain", "exp.save"): "Explanation.save: write_explanation, through files.py",
}
TEMP_FILES = {"mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile"}
IN_PLACE = {"write_text", "write_bytes", "touch", "tofile"}  # path.write_text(...), array.tofile(path)
SAVERS = {"save", "savez", "savez_compressed", "savetxt", "savefig", "imsave", "imwrite", "urlretrieve",
          "download_url_to_file"}  # img.save(p), np.save(p, a), torch.save(x, p), fig.savefig(p), ...
PANDAS = {"to_csv", "to_json", "to_parquet", "to_excel", "to_pickle", "to_feather", "to_hdf", "to_html",
          "to_latex", "to_markdown", "to_stata", "to_xml", "to_orc"}  # with no target they return text
DUMPS = {"dump", "safe_dump", "dump_all", "safe_dump_all"}  # json/yaml/pickle.dump(obj, stream)
COPIES = {"copy", "copy2", "copyfile", "copytree", "copyfileobj", "move"}  # shutil.*
RENAMES = {"replace", "rename", "link", "symlink"}  # os.replace / os.rename (not str.replace)
OPENERS = {"open", "ZipFile", "TarFile"}  # open(p, "w"), Path(p).open("w"), av.open(p, mode="w"), ...
WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}  # os.open(p, os.O_WRONLY | ...)


def _call_name(node: ast.Call) -> tuple[str, str]:
    """(name, owner) of a call: `fig.savefig(p)` -> ("savefig", "fig"), `open(p)` -> ("open", ""),
    `Path(p).open()` -> ("open", "Path(p)")."""
    f = node.func
    if isinstance(f, ast.Name):
        return f.id, ""
    if isinstance(f, ast.Attribute):
        return f.attr, ast.unparse(f)[:-len(f.attr) - 1]  # as written, brackets kept
    return "", ""


def _write_mode(node: ast.Call, name: str, owner: str) -> bool:
    """Whether an open-like call opens for writing (a constant mode with w, a, x or +, or os.open flags)."""
    if name == "open" and owner == "os":
        flags = {n.attr for a in node.args[1:2] for n in ast.walk(a) if isinstance(n, ast.Attribute)}
        return bool(flags & WRITE_FLAGS)
    candidates = [*node.args[:2], *(k.value for k in node.keywords if k.arg == "mode")]
    return any(isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax+")
               for a in candidates)


def write_kind(node: ast.Call) -> str | None:
    """What the call writes in place ("fig.savefig", "open for writing", ...), or None."""
    name, owner = _call_name(node)
    method = bool(owner)
    if name in TEMP_FILES or (name in IN_PLACE and method and owner != "files"):
        return f"{owner}.{name}" if owner else name
    if name in SAVERS and method and (node.args or node.keywords):
        return f"{owner}.{name}"
    if name in PANDAS and method and (node.args or any(k.arg in ("path_or_buf", "path", "buf", "excel_writer")
                                                        for k in node.keywords)):
        return f"{owner}.{name}"
    if name in DUMPS and method and len(node.args) >= 2:
        return f"{owner}.{name}"
    if name in COPIES and owner == "shutil":
        return f"shutil.{name}"
    if name in RENAMES and owner == "os":
        return f"os.{name}"
    if name == "export" and owner.endswith("onnx"):
        return f"{owner}.export"
    if name in OPENERS and _write_mode(node, name, owner):
        return "open for writing"
    return None


def _names(arg: ast.AST) -> str:
    """The variable an argument names: `tmp` or `str(tmp)`."""
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name) and arg.func.id == "str" and arg.args:
        arg = arg.args[0]
    return arg.id if isinstance(arg, ast.Name) else ""


def _called(node: ast.AST, names: set[str]) -> bool:
    return isinstance(node, ast.Call) and _call_name(node)[0] in names


def _files_targets(scope: ast.AST) -> set[str]:
    """Names bound to files.py's temp paths and handles in `scope`: `with atomic_path(p) as tmp`,
    `with atomic_open(p) as fh`, and the parameter of a `write_with(p, lambda tmp: ...)` writer."""
    names = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.withitem) and _called(node.context_expr, {"atomic_path", "atomic_open"}):
            if isinstance(node.optional_vars, ast.Name):
                names.add(node.optional_vars.id)
        if _called(node, {"write_with"}):
            names |= {a.arg for arg in node.args if isinstance(arg, ast.Lambda) for a in arg.args.args}
    return names


def writes(tree: ast.AST) -> list[tuple[str, int, str]]:
    """(function, line, what) for each call that writes a file without files.py; `function` is
    qualified by its class (`_Writer.__init__`), `<module>` for top-level code."""
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, where: str, safe: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = child.name if where == "<module>" else f"{where}.{child.name}"
                extra = _files_targets(child) if not isinstance(child, ast.ClassDef) else set()
                visit(child, inner, safe | extra)
                continue
            if isinstance(child, ast.Call) and not any(_names(a) in safe for a in [*child.args,
                                                                                   *(k.value for k in child.keywords)]):
                kind = write_kind(child)
                if kind is not None:
                    found.append((where, child.lineno, kind))
            visit(child, where, safe)

    visit(tree, "<module>", _files_targets(tree) if isinstance(tree, ast.Module) else set())
    return found


def test_no_module_writes_a_file_outside_files_py():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "files.py":
            continue
        for func, line, call in writes(ast.parse(path.read_text())):
            if (rel, func, call) not in ALLOWED:
                offenders.append(f"{rel}:{line} {func}: {call}")
    assert not offenders, "\n".join(offenders)


def test_every_allowed_exception_still_exists():
    """An ALLOWED entry whose function no longer writes is stale: it would hide a future writer."""
    seen = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        seen |= {(rel, func, call) for func, _, call in writes(ast.parse(path.read_text()))}
    assert set(ALLOWED) <= seen, set(ALLOWED) - seen


CAUGHT = {  # each snippet writes a file in place: the scan must name it
    "fig.savefig(path)": "fig.savefig",
    "ax.figure.savefig(path, dpi=100)": "ax.figure.savefig",
    "df.to_csv(path, index=False)": "df.to_csv",
    "df.to_csv(path_or_buf=path)": "df.to_csv",
    "df.to_json(path)": "df.to_json",
    "img.save(path)": "img.save",
    "Image.fromarray(a).save(path, format='PNG')": "Image.fromarray(a).save",
    "np.save(path, array)": "np.save",
    "np.savez(path, a=array)": "np.savez",
    "torch.save(state, path)": "torch.save",
    "onnx.save(proto, path)": "onnx.save",
    "torch.onnx.export(model, args, path)": "torch.onnx.export",
    "shutil.copy(src, path)": "shutil.copy",
    "shutil.copy2(src, path)": "shutil.copy2",
    "shutil.copyfile(src, path)": "shutil.copyfile",
    "shutil.move(src, path)": "shutil.move",
    "Path(path).open('w')": "open for writing",
    "path.open(mode='a')": "open for writing",
    "open(path, 'w')": "open for writing",
    "open(path, mode='wb')": "open for writing",
    "open(path, 'r+')": "open for writing",
    "os.open(path, os.O_WRONLY | os.O_CREAT)": "open for writing",
    "av.open(path, mode='w')": "open for writing",
    "path.write_text(text)": "path.write_text",
    "Path(path).write_bytes(data)": "Path(path).write_bytes",
    "(folder / 'a.json').write_text(text)": "(folder / 'a.json').write_text",
    "json.dump(payload, handle)": "json.dump",
    "yaml.safe_dump(payload, handle)": "yaml.safe_dump",
    "os.replace(tmp, path)": "os.replace",
    "tempfile.mkstemp(dir=folder)": "tempfile.mkstemp",
}
FINE = [  # through files.py, or not a write at all: the scan must stay quiet
    "write_with(path, lambda tmp: fig.savefig(tmp, format='png'))",
    "write_with(path, lambda tmp: df.to_csv(tmp, index=False))",
    "write_with(path, lambda tmp: img.save(tmp, format='PNG'))",
    "write_text(path, df.to_csv(index=False))",
    "files.write_text(path, 'x')",
    "open(path)",
    "open(path, 'rb')",
    "Image.open(path)",
    "yaml.safe_dump(payload)",
    "text.replace('a', 'b')",
    "df.rename(columns={'a': 'b'})",
]


@pytest.mark.parametrize("snippet, what", sorted(CAUGHT.items()))
def test_the_scan_catches_each_way_of_writing_in_place(snippet, what):
    found = writes(ast.parse(f"def f():\n    {snippet}\n"))
    assert [(func, kind) for func, _, kind in found] == [("f", what)], (snippet, found)
    at_top = writes(ast.parse(snippet))  # module-level code and methods are scanned too
    in_method = writes(ast.parse(f"class C:\n    def m(self):\n        {snippet}\n"))
    assert [k for _, _, k in at_top] == [what] and [(f, k) for f, _, k in in_method] == [("C.m", what)]


@pytest.mark.parametrize("snippet", FINE)
def test_the_scan_leaves_files_py_writers_and_reads_alone(snippet):
    assert writes(ast.parse(f"def f():\n    {snippet}\n")) == []


def test_temp_paths_from_files_py_are_fine_in_nested_code():
    source = """
def f(path, state):
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        for _ in range(2):
            np.save(str(tmp), state)
    with atomic_open(path, "wb") as handle:
        json.dump(state, handle)
    torch.save(state, path)
"""
    assert [(func, kind) for func, _, kind in writes(ast.parse(source))] == [("f", "torch.save")]


def test_every_image_opened_is_closed():
    """`Image.open` outside a `with` keeps the file open until the garbage collector runs (one
    per gallery image, per arm): every call in the package is a `with` statement's."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        managed = {id(item.context_expr) for node in ast.walk(tree) if isinstance(node, (ast.With, ast.AsyncWith))
                   for item in node.items}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _call_name(node) == ("open", "Image") and id(node) not in managed:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders


def test_every_public_helper_of_files_py_is_used_by_the_package():
    """files.py holds the writer and its guard, nothing only its tests call (as `same_file` was)."""
    tree = ast.parse((PACKAGE / "files.py").read_text())
    public = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    public -= {"write_bytes"}  # the binary twin of write_text: the writer's API for bytes, kept whole
    used = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "files.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom):
                used |= {a.name for a in node.names}
    assert public - used == set(), f"unused in the package: {sorted(public - used)}"


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
