"""Package layout: one namespace, and dependencies pointing one way."""
import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# folder -> her2sim subpackages it must NOT import
FORBIDDEN = {
    "her2sim/core": ("her2sim.sim", "her2sim.recon", "her2sim.phantoms", "her2sim.analysis", "her2sim.cli",
                     "her2sim.pipeline", "her2sim.steps", "her2sim.commands"),
    "analysis": ("her2sim.sim", "her2sim.recon", "her2sim.phantoms", "her2sim.cli", "her2sim.pipeline",
                 "her2sim.steps"),
    "phantoms": ("her2sim.sim", "her2sim.recon", "her2sim.analysis", "her2sim.cli", "her2sim.pipeline",
                 "her2sim.steps"),
    "sim": ("her2sim.recon", "her2sim.phantoms", "her2sim.analysis", "her2sim.cli", "her2sim.pipeline",
            "her2sim.steps"),
    "recon": ("her2sim.phantoms", "her2sim.analysis", "her2sim.cli", "her2sim.pipeline", "her2sim.steps"),
}
PACKAGE_OF = {"her2sim/core": "her2sim.core", "analysis": "her2sim.analysis", "phantoms": "her2sim.phantoms",
              "sim": "her2sim.sim", "recon": "her2sim.recon"}


def _imports(path: Path, package: str):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the package
                parts = package.split(".")
                rel = path.relative_to(ROOT / [k for k, v in PACKAGE_OF.items() if v == package][0]).parts[:-1]
                base = parts + list(rel)
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                yield ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.module


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_dependency_direction(folder):
    bad = []
    for path in (ROOT / folder).rglob("*.py"):
        for mod in _imports(path, PACKAGE_OF[folder]):
            if mod in ("sim", "recon", "analysis", "phantoms") or mod.split(".")[0] in ("sim", "recon", "analysis", "phantoms"):
                bad.append(f"{path.relative_to(ROOT)} imports top-level {mod}")
            for f in FORBIDDEN[folder]:
                if mod == f or mod.startswith(f + "."):
                    bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", ["her2sim.sim", "her2sim.recon", "her2sim.phantoms", "her2sim.analysis",
                                  "her2sim.core"])
def test_namespace_packages_import(name):
    mod = importlib.import_module(name)
    assert Path(mod.__file__).resolve().is_relative_to(ROOT)


def test_no_top_level_sim_package_installed():
    import importlib.util
    for top in ("sim", "analysis", "recon", "phantoms"):
        spec = importlib.util.find_spec(top)
        # running from the repo root puts the folder on sys.path as a plain directory; it must not be
        # an installed distribution package
        assert spec is None or Path(spec.origin or str(ROOT / top)).resolve().is_relative_to(ROOT)
