"""Checks that pserver's type stubs (_pserver.pyi) and docstrings cover the extension: every
public class, method and property of pserver._pserver appears in the stubs, none is stubbed that
the module lacks, and each has a docstring that help() shows. Exit status 1 naming what is off."""

import ast
import inspect
import pathlib
import sys

import pserver
from pserver import _pserver

stub_path = pathlib.Path(_pserver.__file__).with_name("_pserver.pyi")
tree = ast.parse(stub_path.read_text(), filename=str(stub_path))
stubbed = {}
for node in tree.body:
    if isinstance(node, ast.ClassDef):
        stubbed[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}

problems = []
module_classes = {name: obj for name, obj in vars(_pserver).items() if inspect.isclass(obj) and not name.startswith("_")}
for name, cls in module_classes.items():
    members = {m for m in vars(cls) if not m.startswith("_")}
    if name not in stubbed:
        problems.append(f"class {name} has no stub")
        continue
    for m in sorted(members - stubbed[name]):
        problems.append(f"{name}.{m} has no stub")
    for m in sorted(stubbed[name] - members):
        problems.append(f"{name}.{m} is stubbed but not in the module")
    if not (cls.__doc__ or "").strip():
        problems.append(f"class {name} has no docstring")
    for m in members:
        if not (getattr(cls, m).__doc__ or "").strip():
            problems.append(f"{name}.{m} has no docstring")
for name in sorted(set(stubbed) - set(module_classes)):
    problems.append(f"class {name} is stubbed but not in the module")
for name in pserver.__all__:
    if not hasattr(pserver, name):
        problems.append(f"pserver.__all__ names {name}, which pserver lacks")

if problems:
    print("check_stubs: " + "\ncheck_stubs: ".join(problems))
    sys.exit(1)
print(f"check_stubs: {len(module_classes)} classes, stubs and docstrings complete")
