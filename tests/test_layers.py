"""The package's layers (ARCHITECTURE.md, "Layers"): imports go down only, no project import hides in a
function, and a config is read and validated without torch or OpenCV."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "reid_kd"

# bottom to top; a module may import its own layer and those below it
LAYERS = [
    {"errors", "schema", "registry", "utils"},
    {"config"},
    {"data", "models"},
    {"evaluation", "losses"},
    {"distill"},
    {"engine"},
    {"deploy"},
    {"bench"},
    {"cli", "__main__"},
]
# The command line reads its config first and imports the heavy layers inside each command, so a config
# mistake is told before torch loads: its function-local project imports are the only ones allowed.
LOCAL_IMPORTS_ALLOWED = {"reid_kd.cli"}


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return next(i for i, names in enumerate(LAYERS) if top in names) if top else 0


def project_imports(tree: ast.Module, known: dict[str, Path]) -> list[tuple[ast.stmt, str]]:
    """(statement, imported module) for every import of a reid_kd module; `from a import b` names a.b
    where b is a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name.split(".")[0] == "reid_kd"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "reid_kd":
            found += [(node, f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module)
                      for a in node.names]
    return found


def test_every_module_belongs_to_a_layer():
    for name in modules():
        layer(name)  # StopIteration names a package missing from LAYERS


def test_imports_go_down_only():
    known = modules()
    upward = []
    for name, path in known.items():
        for node, target in project_imports(ast.parse(path.read_text()), known):
            if layer(target) > layer(name):
                upward.append(f"{name}:{node.lineno} imports {target}")
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    """Within a layer too, the modules' imports (TYPE_CHECKING ones included) form no circle: each module can
    be read knowing only what it imports."""
    known = modules()
    graph = {name: {t for _, t in project_imports(ast.parse(path.read_text()), known) if t in known and t != name}
             for name, path in known.items()}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            assert state.get(target) != "open", "import circle: " + " -> ".join(path + [name, target])
            if target not in state:
                visit(target, path + [name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_no_function_is_over_60_lines():
    """A function a reader cannot take in at once is split into ones with a name each."""
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in modules().values() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert not long, "\n".join(long)


def test_no_function_local_project_imports():
    known = modules()
    local = []
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        # module level, including `if TYPE_CHECKING:` blocks (annotations only: nothing is imported at run time)
        top = {id(node) for node in tree.body}
        top |= {id(inner) for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
                for inner in node.body}
        for node, target in project_imports(tree, known):
            if id(node) not in top and name not in LOCAL_IMPORTS_ALLOWED:
                local.append(f"{name}:{node.lineno} imports {target} inside a function")
    assert not local, "\n".join(local)


def test_config_schemas_and_registries_load_without_torch_or_opencv():
    code = """
import json, sys
import reid_kd.cli, reid_kd.config, reid_kd.registry, reid_kd.schema
from reid_kd.engine.configs import REGISTRIES, load_config
from reid_kd.models.catalog import PRETRAINED
from reid_kd.registry import default_values
registries = [REGISTRIES.datasets, REGISTRIES.backbones, REGISTRIES.distillers, PRETRAINED]
names = {r.kind: r.names() for r in registries}
options = {name: default_values(entry) for name, entry in REGISTRIES.distillers.items()}
widths = {name: entry.info["widths"] for name, entry in REGISTRIES.backbones.items()}
cfg = load_config("configs/quickstart.yaml", ["distill.method=gird", "distill.gird.memory_size=64"])
print(json.dumps({"heavy": sorted(m for m in ("torch", "cv2") if m in sys.modules), "names": names}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["heavy"] == []
    assert "gird" in result["names"]["distillation method"] and "resnet18" in result["names"]["backbone"]
    assert "synth_veri" in result["names"]["dataset"] and result["names"]["pretraining source"] == ["imagenet", "synth"]


def test_no_private_name_is_imported_from_another_module():
    known = modules()
    private = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "reid_kd":
                private += [f"{name}:{node.lineno} imports {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and node.module != name]
    assert not private, "\n".join(private) + "\n(give the name a public one in its module)"


def test_the_leaderboard_command_runs_without_torch(tmp_path):
    """`reidkd leaderboard` reads records only: the training stack never loads."""
    code = f"""
import json, sys
from click.testing import CliRunner
from reid_kd.cli import main
result = CliRunner().invoke(main, ["leaderboard", "--runs", {str(tmp_path / "runs")!r}, "--out", {str(tmp_path)!r},
                                  "--readme", {str(tmp_path / "README.md")!r}])
print(json.dumps({{"exit": result.exit_code, "output": result.output,
                   "heavy": sorted(m for m in ("torch", "torchvision", "cv2", "faiss") if m in sys.modules)}}))
"""
    (tmp_path / "runs" / "mini").mkdir(parents=True)
    (tmp_path / "runs" / "mini" / "suite.yaml").write_text("name: mini\nseeds: [0]\nmethods: [{name: b, method: none}]\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["exit"] == 0, result["output"]
    assert "missing (0/1)" in (tmp_path / "mini.md").read_text() and (tmp_path / "mini_cmc.png").is_file()
    assert result["heavy"] == []
