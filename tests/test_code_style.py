"""The code's style and layout, checked on its source: ruff's lint rules and formatting, layers that
import one way, subcommand modules that do not import from each other nor anything heavy at their
top, every exception class in hat_basicsr/errors.py under one root (UserError), and entry points
that catch that root instead of tuples of project errors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from hat_basicsr import errors
from hat_basicsr.cli import SUBCOMMANDS

PACKAGE = Path(__file__).resolve().parents[1] / 'hat_basicsr'
SOURCE_FOLDERS = ('hat_basicsr', 'tests', 'benchmarks', 'datasets')
# What each layer must not import: utils/ serves every other layer, the layers above it serve cli/.
FORBIDDEN = {
    'utils': ('archs', 'models', 'data', 'cli', 'analysis'),
    'archs': ('models', 'data', 'cli', 'analysis'),
    'data': ('archs', 'models', 'cli', 'analysis'),
    'analysis': ('archs', 'models', 'data', 'cli'),
    'models': ('data', 'cli', 'analysis'),
}


def imported_modules(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, module) of every import in `path`, at any depth (imports inside functions count)."""
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module


def test_layers_import_one_way():
    violations = [
        f'{path.relative_to(PACKAGE.parent)}:{line} imports {module}'
        for layer, forbidden in FORBIDDEN.items()
        for path in sorted((PACKAGE / layer).rglob('*.py'))
        for line, module in imported_modules(path)
        if module.split('.')[:2] in (['hat_basicsr', name] for name in forbidden)
    ]
    assert not violations, '\n'.join(violations)


def test_subcommand_modules_do_not_import_each_other():
    """The subcommands (one module each) share code only through the other modules of cli/."""
    violations = [
        f'cli/{name}.py:{line} imports {module}'
        for name in SUBCOMMANDS
        for line, module in imported_modules(PACKAGE / 'cli' / f'{name}.py')
        if module in {f'hat_basicsr.cli.{other}' for other in SUBCOMMANDS}
    ]
    assert not violations, '\n'.join(violations)


# What the modules that build `hat-basicsr`'s parser may import at their top (anything else is
# imported inside the functions that run a command): the parser then loads no torch (cli/__init__.py).
LIGHT_MODULES = (
    'hat_basicsr.errors',
    'hat_basicsr.cli.arguments',
    'hat_basicsr.utils.defaults',
    'hat_basicsr.utils.files',
    'hat_basicsr.utils.sharding',
)


def top_level_imports(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, module) of the imports that run when `path` is imported (not under `if TYPE_CHECKING:`)."""
    for node in ast.parse(path.read_text(encoding='utf-8')).body:
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module


def test_parser_modules_import_nothing_heavy_at_their_top():
    violations = [
        f'cli/{name}.py:{line} imports {module}'
        for name in ('__init__', 'arguments', *SUBCOMMANDS)
        for line, module in top_level_imports(PACKAGE / 'cli' / f'{name}.py')
        if module.split('.')[0] not in sys.stdlib_module_names and module not in LIGHT_MODULES + ('hat_basicsr',)
    ]
    assert not violations, '\n'.join(violations)


def test_exception_classes_are_defined_in_errors_only():
    """A class whose bases include a name ending in Error or Exception, or Exception itself, is an
    exception class; every one belongs in hat_basicsr/errors.py."""
    elsewhere = []
    for path in sorted(PACKAGE.rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            bases = [
                base.id if isinstance(base, ast.Name) else getattr(base, 'attr', '')
                for base in getattr(node, 'bases', [])
            ]
            if (
                isinstance(node, ast.ClassDef)
                and any(base.endswith(('Error', 'Exception')) for base in bases)
                and path.name != 'errors.py'
            ):
                elsewhere.append(f'{path.relative_to(PACKAGE.parent)}:{node.lineno} class {node.name}')
    assert not elsewhere, '\n'.join(elsewhere)


# Exception classes that are signals, not the user's mistakes: the entry points handle each by name.
CONTROL_FLOW_ERRORS = (errors.TrainingStopped,)
PROJECT_ERROR_NAMES = {
    name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, BaseException)
}
# The modules that turn errors into one line and an exit status.
ENTRY_POINTS = (
    *sorted((PACKAGE / 'cli').glob('*.py')),
    PACKAGE / 'train.py',
    PACKAGE / 'test.py',
    PACKAGE / 'demo.py',
    PACKAGE / 'utils' / 'user_errors.py',
)


def test_every_error_class_derives_from_user_error():
    """One root for the user's mistakes, so an entry point catches them once; a control-flow signal
    says so in its docstring and stays outside the root."""
    classes = [errors.__dict__[name] for name in sorted(PROJECT_ERROR_NAMES)]
    outside = [cls.__name__ for cls in classes if not issubclass(cls, errors.UserError)]
    assert outside == [cls.__name__ for cls in CONTROL_FLOW_ERRORS]
    for cls in CONTROL_FLOW_ERRORS:
        assert 'control-flow' in cls.__doc__ and 'not a UserError' in cls.__doc__


def test_entry_points_catch_the_root_not_tuples_of_project_errors():
    """A tuple naming two or more project error classes (an `except (A, B)` clause, a module-level
    list of errors to report) is what UserError replaces; isinstance checks that choose a message's
    wording are allowed."""
    violations = []
    for path in ENTRY_POINTS:
        tree = ast.parse(path.read_text(encoding='utf-8'))
        allowed = {
            id(node.args[1])
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'isinstance' and len(node.args) == 2
        }
        for node in ast.walk(tree):
            named = [element.id for element in getattr(node, 'elts', []) if isinstance(element, ast.Name)]
            if (
                isinstance(node, ast.Tuple)
                and id(node) not in allowed
                and len(PROJECT_ERROR_NAMES.intersection(named)) > 1
            ):
                violations.append(f'{path.relative_to(PACKAGE.parent)}:{node.lineno} ({", ".join(named)})')
    assert not violations, '\n'.join(violations)


def test_tests_take_helpers_from_helpers_not_conftest():
    """conftest.py holds fixtures, which pytest injects; what tests import lives in helpers.py."""
    tests = Path(__file__).resolve().parent
    violations = [
        f'{path.name}:{line}'
        for path in sorted(tests.glob('*.py'))
        for line, module in imported_modules(path)
        if module == 'conftest'
    ]
    assert not violations, '\n'.join(violations)


@pytest.mark.parametrize('command', [('check',), ('format', '--check', '--diff')], ids=['check', 'format'])
def test_ruff_finds_nothing(command):
    """The lint rules and the formatting of pyproject.toml's [tool.ruff], on every source folder."""
    proc = subprocess.run(
        [sys.executable, '-m', 'ruff', *command, *SOURCE_FOLDERS], cwd=PACKAGE.parent, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def registered_classes(folder: str, registry: str) -> Iterator[Tuple[Path, ast.ClassDef]]:
    """(file, class) for every class under hat_basicsr/`folder` decorated with register_once(`registry`)."""
    for path in sorted((PACKAGE / folder).rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(decorator, ast.Call)
                and getattr(decorator.func, 'id', None) == 'register_once'
                and [getattr(arg, 'id', None) for arg in decorator.args] == [registry]
                for decorator in node.decorator_list
            ):
                yield path, node


def test_registered_archs_take_no_var_keyword_arguments():
    """An arch that swallows **kwargs defeats the check of network_g against its signature: a
    misspelled argument would be accepted and ignored."""
    archs = list(registered_classes('archs', 'ARCH_REGISTRY'))
    assert archs, 'no registered arch found: the decorator check is out of date'
    violations = [
        f'{path.relative_to(PACKAGE.parent)}:{node.lineno} class {node.name}.__init__(**{init.args.kwarg.arg})'
        for path, node in archs
        for init in node.body
        if isinstance(init, ast.FunctionDef) and init.name == '__init__' and init.args.kwarg is not None
    ]
    assert not violations, '\n'.join(violations)


@pytest.mark.parametrize('folder, registry', [('archs', 'ARCH_REGISTRY'), ('data', 'DATASET_REGISTRY')])
def test_registered_archs_and_datasets_declare_their_options(folder, registry):
    """The option checker and the schema read a component's options from its OPTIONS (a Section)."""
    classes = list(registered_classes(folder, registry))
    assert classes, f'no class registered in {registry} found under {folder}/'
    undeclared = [
        f'{path.relative_to(PACKAGE.parent)}:{node.lineno} class {node.name}'
        for path, node in classes
        if not any(
            (isinstance(statement, ast.AnnAssign) and getattr(statement.target, 'id', None) == 'OPTIONS')
            or (
                isinstance(statement, ast.Assign)
                and any(getattr(target, 'id', None) == 'OPTIONS' for target in statement.targets)
            )
            for statement in node.body
        )
    ]
    assert not undeclared, '\n'.join(undeclared)
