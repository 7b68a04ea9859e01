"""The carry's import check, run by `scripts/gpu-carry --check` under the target Python (python -I -S).

Imports every module the GPU proof's code imports, with sys.path holding only the standard library, the carry's
site/ and project/, and the host's packages stubbed out by name (a stub module answers every attribute; a fake
dist-info gives each the host's version, so version checks see the host). The list is read from the code: an
AST walk from bench.gpu_proof over the project's modules (imports at module level and inside functions, and
importlib.import_module of a package's modules), then each third-party import those modules make.

Exit status 1 when an import needs a module that neither the carry, the host nor the standard library has.
An import that fails for another reason (a stub cannot stand in for the host's real package there) is listed as
not checked, with the reason, and does not fail the check.
"""

from __future__ import annotations

import abc
import argparse
import ast
import importlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import tempfile
import traceback
import types
from pathlib import Path

ROOTS = ("bench.gpu_proof",)
# Project modules the proof never runs although a function refers to them: Ray's cluster mode (off in the proof).
NOT_IN_THE_PROOF = ("trainer.cluster", "bench.cluster")
OPTIONAL_HANDLERS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


# --------------------------------------------------------------------------- stubs


class StubMeta(abc.ABCMeta):
    """Classes the stubs hand out: subclassable (also next to ABCs), and every class attribute exists."""

    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return stub_value(f"{cls.__qualname__}.{name}")


class StubBase(metaclass=StubMeta):
    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return stub_value(f"{type(self).__qualname__}().{name}")


class Stub:
    """A stand-in value: every attribute exists, it can be called, used as a decorator, compared and iterated."""

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return stub_value(f"{self._name}.{name}")

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and (callable(args[0]) or isinstance(args[0], type)):
            return args[0]  # used as a decorator
        return Stub(f"{self._name}()")

    def __mro_entries__(self, bases):
        return (stub_class(self._name),)

    def __repr__(self):
        return f"<stub {self._name}>"

    __str__ = __repr__

    def __bool__(self):
        return False

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __getitem__(self, key):
        return Stub(f"{self._name}[]")

    def __contains__(self, item):
        return False

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)

    def __lt__(self, other):
        return False

    __le__ = __gt__ = __ge__ = __lt__

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __int__(self):
        return 0

    def __index__(self):
        return 0

    def __float__(self):
        return 0.0

    def _same(self, *args):
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _same
    __floordiv__ = __mod__ = __pow__ = __neg__ = __pos__ = __and__ = __rand__ = __xor__ = _same
    __or__ = __ror__ = __matmul__ = __lshift__ = __rshift__ = _same


class StubText(str):
    """A constant (ALL_CAPS) or a version: a real string whose attributes are stubs; versions compare with
    tuples as torch's TorchVersion does."""

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return stub_value(f"{self}.{name}")

    def _parts(self, other):
        mine = tuple(int(p) for p in self.split("+")[0].split(".") if p.isdigit())
        return mine, tuple(other)

    def __ge__(self, other):
        return self._parts(other)[0] >= self._parts(other)[1] if isinstance(other, tuple) else str.__ge__(self, other)

    def __gt__(self, other):
        return self._parts(other)[0] > self._parts(other)[1] if isinstance(other, tuple) else str.__gt__(self, other)

    def __le__(self, other):
        return self._parts(other)[0] <= self._parts(other)[1] if isinstance(other, tuple) else str.__le__(self, other)

    def __lt__(self, other):
        return self._parts(other)[0] < self._parts(other)[1] if isinstance(other, tuple) else str.__lt__(self, other)

    __hash__ = str.__hash__

    def _same(self, *args):
        return self

    __or__ = __ror__ = __and__ = __rand__ = __xor__ = __invert__ = _same  # flags

    def __call__(self, *args, **kwargs):  # an ALL_CAPS class (yarl.URL, nn.GELU)
        return Stub(f"{self}()")

    def __mro_entries__(self, bases):
        return (stub_class(str(self)),)


_classes: dict[str, type] = {}
_values: dict[str, object] = {}


def stub_class(name: str) -> type:
    if name not in _classes:
        _classes[name] = StubMeta(name.rsplit(".", 1)[-1], (StubBase,), {"__qualname__": name, "__module__": "stub"})
    return _classes[name]


def stub_value(name: str):
    """ALL_CAPS names are strings (paths, settings), Capitalised names are classes (subclassable, usable in
    isinstance); the rest are values."""
    if name not in _values:
        last = name.rsplit(".", 1)[-1]
        if last.isupper() and len(last) > 1:
            _values[name] = StubText(name)
        else:
            _values[name] = stub_class(name) if last[:1].isupper() else Stub(name)
    return _values[name]


class StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return stub_value(f"{self.__name__}.{name}")


class StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers every import under the stubbed top-level names."""

    def __init__(self, modules: dict[str, str]):
        self.versions = modules  # top-level module -> its distribution's version

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.versions:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = StubModule(spec.name)
        module.__path__ = []
        module.__version__ = StubText(self.versions[spec.name.split(".")[0]])
        return module

    def exec_module(self, module):
        pass


def install_stubs(stubs: dict, folder: Path) -> set[str]:
    """Fake dist-info for each host distribution, and the finder for its modules; returns the stubbed names."""
    top_level = {}
    for dist, version in stubs["versions"].items():
        info = folder / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        for module in stubs["modules"].get(dist, [dist.replace("-", "_")]):
            top_level[module] = version
    sys.path.append(str(folder))
    sys.meta_path.insert(0, StubFinder(top_level))
    return set(top_level)


# --------------------------------------------------------------------------- what the proof imports


class Imports(ast.NodeVisitor):
    """The imports in one module: (module, names, optional), where optional means an ImportError is handled."""

    def __init__(self, module: str, is_package: bool):
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, tuple[str, ...], bool]] = []
        self.prefixes: list[str] = []
        self._optional = 0

    def visit_Try(self, node):
        handled = {getattr(h.type, "id", None) for h in node.handlers} | {
            getattr(e, "id", None) for h in node.handlers if isinstance(h.type, ast.Tuple) for e in h.type.elts}
        optional = bool(handled & OPTIONAL_HANDLERS)
        self._optional += optional
        for statement in node.body:
            self.visit(statement)
        self._optional -= optional
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    def visit_Import(self, node):
        for alias in node.names:
            self.found.append((alias.name, (), self._optional > 0))

    def visit_ImportFrom(self, node):
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            parent = ".".join(parts[: len(parts) - node.level + 1])
            base = f"{parent}.{base}".rstrip(".") if base else parent
        self.found.append((base, tuple(alias.name for alias in node.names if alias.name != "*"), self._optional > 0))

    def visit_Call(self, node):
        called = node.func
        if isinstance(called, ast.Attribute) and called.attr == "import_module" and node.args:
            argument = node.args[0]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                self.found.append((argument.value, (), self._optional > 0))
            elif isinstance(argument, ast.JoinedStr) and argument.values:
                first = argument.values[0]
                if isinstance(first, ast.Constant) and str(first.value).endswith("."):
                    self.prefixes.append(str(first.value)[:-1])
        self.generic_visit(node)


def module_file(project: Path, module: str) -> Path | None:
    path = project.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def walk(project: Path, roots) -> tuple[list[str], list[tuple[str, tuple[str, ...], bool]]]:
    """The project modules reachable from roots, and the third-party imports they make."""
    first_party = {path.name for path in project.iterdir() if (path / "__init__.py").is_file()}
    seen, queue, external = [], list(roots), []
    while queue:
        module = queue.pop()
        if module in seen or module.startswith(NOT_IN_THE_PROOF):
            continue
        path = module_file(project, module)
        if path is None:
            continue
        seen.append(module)
        parents = module.split(".")
        queue += [".".join(parents[:i]) for i in range(1, len(parents))]
        visitor = Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for prefix in visitor.prefixes:
            queue += [f"{prefix}.{p.stem}" for p in project.joinpath(*prefix.split(".")).glob("*.py")]
        for name, names, optional in visitor.found:
            if name.split(".")[0] in first_party:
                queue.append(name)
                queue += [f"{name}.{item}" for item in names if module_file(project, f"{name}.{item}")]
            else:
                external.append((name, names, optional))
    return sorted(seen), sorted(set(external))


# --------------------------------------------------------------------------- the check


def missing_name(error: BaseException, stubbed: set[str]) -> str | None:
    """The module an import error says is missing, unless it is one the host has."""
    for link in _chain(error):
        if isinstance(link, ModuleNotFoundError) and link.name:
            if link.name.split(".")[0] not in stubbed:
                return link.name
    return None


def _chain(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def try_import(name: str, names: tuple[str, ...]) -> None:
    module = importlib.import_module(name)
    for item in names:
        if not hasattr(module, item):
            importlib.import_module(f"{name}.{item}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--stand-ins", type=Path, help="real copies of a few of the host's packages")
    parser.add_argument("--stubs", type=Path, required=True)
    args = parser.parse_args()
    sys.path[:0] = [str(args.site.resolve()), str(args.project.resolve())]
    if args.stand_ins:
        sys.path.append(str(args.stand_ins.resolve()))
    stubbed = install_stubs(json.loads(args.stubs.read_text()), Path(tempfile.mkdtemp(prefix="host-dists-")))
    project_modules, external = walk(args.project, ROOTS)
    checks = [(module, (), False) for module in project_modules] + external
    missing, not_checked, passed = [], [], 0
    for name, names, optional in checks:
        if name.split(".")[0] in stubbed:
            passed += 1  # the host's own package
            continue
        try:
            try_import(name, names)
            passed += 1
        except BaseException as error:  # noqa: BLE001 - every failure is classified and reported
            absent = missing_name(error, stubbed)
            what = f"{name}" + (f" ({', '.join(names)})" if names else "")
            if absent and optional:
                not_checked.append(f"{what}: optional, and {absent} is not carried")
            elif absent:
                missing.append(f"{what}: needs {absent}, which neither the carry nor the host has")
            else:
                last = traceback.format_exception_only(type(error), error)[-1].strip()
                if os.environ.get("CARRY_CHECK_TRACEBACKS"):
                    traceback.print_exc(limit=-4)
                not_checked.append(f"{what}: {last[:200]}")
    print(f"import check: {len(project_modules)} project modules and {len(external)} third-party imports; "
          f"{passed} imported, {len(not_checked)} not checked, {len(missing)} missing", flush=True)
    for line in not_checked:
        print(f"  not checked: {line}")
    for line in missing:
        print(f"  MISSING: {line}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
