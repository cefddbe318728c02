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
