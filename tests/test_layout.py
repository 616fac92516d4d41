"""The package layout's boundaries: a shared core that task packages build on, never the other way round, and
pure modules (featurization, models, losses, every task's metrics) that import without Ray."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "momu"
# One package per capability; everything else under momu/ is the shared core.
TASK_PACKAGES = {"pretrain", "retrieval", "property", "embed", "serve", "caption", "generate"}
# The composition roots: the top-level CLI registers every task's subcommands.
CORE_ALLOWED_TO_IMPORT_TASKS = {"cli.py"}
PURE_MODULES = [
    "momu.chem.featurize", "momu.chem.columns", "momu.chem.augment", "momu.chem.scaffold", "momu.chem.draw",
    "momu.models.gin", "momu.models.text", "momu.models.momu", "momu.models.fingerprint", "momu.models.loading",
    "momu.losses", "momu.config", "momu.data.readers", "momu.data.records", "momu.data.pairs", "momu.index",
    "momu.retrieval.metrics", "momu.retrieval.report", "momu.property.metrics", "momu.property.model",
    "momu.pretrain.contrastive", "momu.pretrain.local", "momu.embed.stages", "momu.caption.pool",
    "momu.caption.retrieval", "momu.caption.split_eval",
]


def _momu_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "momu" or n.startswith("momu.")}


def test_platform_has_no_init_file():
    assert not (PACKAGE.parent / "__init__.py").exists(), "platform/__init__.py would shadow the standard library"


def test_every_task_package_is_a_package_with_its_own_cli():
    for name in TASK_PACKAGES:
        folder = PACKAGE / name
        if not folder.exists():
            continue  # a capability not built yet
        assert (folder / "__init__.py").is_file(), f"momu/{name}/ lacks __init__.py"
        assert (folder / "cli.py").is_file() or name == "serve" or not any(folder.glob("*.py")), name


def test_no_core_module_imports_a_task_package():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in TASK_PACKAGES or str(rel) in CORE_ALLOWED_TO_IMPORT_TASKS:
            continue
        for module in _momu_imports(path):
            parts = module.split(".")
            if len(parts) > 1 and parts[1] in TASK_PACKAGES:
                offenders.append(f"momu/{rel} imports {module}")
    assert not offenders, "core modules must not depend on task packages:\n" + "\n".join(offenders)


def test_the_boundary_check_sees_a_violation(tmp_path):
    """The scan above reads real imports: a core file importing a task package is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from momu.retrieval.metrics import full_rank\nimport momu.property.model\n")
    assert _momu_imports(bad) == {"momu.retrieval.metrics", "momu.property.model"}


BLOCK_RAY = """
import importlib, sys
class _NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"{name} imported by a module that must be pure")
        return None
sys.meta_path.insert(0, _NoRay())
for name in sys.argv[1:]:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
assert not leaked, leaked
print("ok", len(sys.argv) - 1)
"""


@pytest.mark.parametrize("modules", [PURE_MODULES])
def test_pure_modules_import_without_ray(modules):
    out = subprocess.run([sys.executable, "-c", BLOCK_RAY, *modules], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == f"ok {len(modules)}"


def test_ray_blocker_fails_on_a_ray_module():
    out = subprocess.run([sys.executable, "-c", BLOCK_RAY, "momu.chem.featurize", "ray.data"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "must be pure" in out.stderr
