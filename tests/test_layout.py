"""The installed layout: one `vitforge` namespace, every package listed, no bare top-level packages."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AREAS = {"quant": "quant", "hw": "hw", "sim": "sim", "sw": "sw", "boards": "boards"}


def test_every_package_folder_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    for alias, folder in AREAS.items():
        assert cfg["package-dir"][f"vitforge.{alias}"] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            assert ".".join(("vitforge", alias, *rel)) in listed, f"{init} is not listed in pyproject"


def test_areas_import_under_the_vitforge_namespace_only(tmp_path):
    # Run outside the checkout so that only what is installed is importable.
    probe = (
        "import importlib.util, json; "
        f"print(json.dumps({{n: getattr(importlib.util.find_spec(n), 'origin', None) for n in {sorted(AREAS)!r}}})); "
        f"print(json.dumps({{n: getattr(importlib.util.find_spec('vitforge.' + n), 'origin', None) "
        f"for n in {sorted(AREAS)!r}}}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    bare, namespaced = (json.loads(line) for line in out.stdout.splitlines())
    assert bare == dict.fromkeys(AREAS), f"bare packages are importable: {bare}"
    for alias, folder in AREAS.items():
        assert Path(namespaced[alias]).parent == ROOT / folder


def test_console_entry_point_runs(tmp_path):
    exe = Path(sys.executable).parent / "vitforge"
    out = subprocess.run([str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "approx" in out.stdout


#: The layers, lowest first: a module may import its own layer and the ones below it.
LAYERS = ("quant", "hw", "sim", "sw", "boards", "vitforge")


def _imports(path: Path, root: Path = ROOT):
    """``(line, imported module, imported names)`` of every import in ``path`` (functions included);
    relative imports resolved to ``vitforge.*``."""
    import ast

    rel = path.relative_to(root)
    area = rel.parts[0]
    package = ["vitforge"] + ([] if area == "vitforge" else [area]) + list(rel.parts[1:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module, tuple(a.name for a in node.names)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "vitforge":
        return None
    if len(parts) > 1 and parts[1] in LAYERS[:-1]:
        return parts[1]
    return "vitforge" if len(parts) == 1 or parts[1] == "cli" else None


def _sources():
    for area in LAYERS:
        yield from sorted((ROOT / area).rglob("*.py"))


def test_imports_go_one_way():
    """quant < hw < sim < sw < boards < the CLI: no module imports a higher layer, even inside a function."""
    bad = []
    for path in _sources():
        own = path.relative_to(ROOT).parts[0]
        for line, module, _ in _imports(path):
            dest = _layer(module)
            if dest is not None and LAYERS.index(dest) > LAYERS.index(own):
                bad.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {module} ({dest})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def _private_uses(path: Path, root: Path = ROOT) -> list[str]:
    """Underscore names of other vitforge modules that ``path`` imports, or reads as ``module._name``."""
    import ast

    bad, aliases = [], set()
    for line, module, names in _imports(path, root):
        if not module.startswith("vitforge"):
            continue
        bad += [f"{line}: {module}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("vitforge")):
            aliases |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("vitforge")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return bad


def test_no_private_names_across_modules():
    """A module imports no underscore name of another vitforge module, nor reads one as an attribute."""
    bad = [f"{path.relative_to(ROOT)}:{use}" for path in [*_sources(), *sorted((ROOT / "scripts").rglob("*.py"))]
           for use in _private_uses(path)]
    assert not bad, "private names of other modules used:\n" + "\n".join(bad)


def test_no_mock_in_library_code():
    bad = [f"{path.relative_to(ROOT)}:{line}" for path in _sources() for line, module, names in _imports(path)
           if module.startswith("unittest.mock") or (module == "unittest" and "mock" in names) or module == "mock"]
    assert not bad, "unittest.mock outside tests: " + ", ".join(bad)


def test_the_layout_check_can_fail(tmp_path):
    """The helpers above see an upward import inside a function and a private name."""
    probe = tmp_path / "quant" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("def f():\n    from vitforge.sw.export import _x\n    from ..sw import y\n")
    found = list(_imports(probe, tmp_path))
    assert found[1] == (3, "vitforge.sw", ("y",))
    found = found[:1]
    assert found == [(2, "vitforge.sw.export", ("_x",))]
    assert _layer("vitforge.sw.export") == "sw" and _layer("vitforge.cli") == "vitforge"
    probe.write_text("from vitforge.sim.benches import reference as ref\nx = ref._linear\nfrom .x import _y\n")
    assert _private_uses(probe, tmp_path) == ["3: vitforge.quant.x._y", "2: ref._linear"]
