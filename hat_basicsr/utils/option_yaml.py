"""Reading an option file's YAML, for every entry point (train, test and the CLI subcommands).

PyYAML reports a syntax error in five to seven lines quoting the offending text; editors and
terminals jump to `FILE:LINE:COLUMN`, so the error is given in that form on one line.
"""

from __future__ import annotations

from typing import Any

import yaml

from hat_basicsr.errors import OptionFileError


def _position(mark: Any) -> str:
    return f'line {mark.line + 1}, column {mark.column + 1}'


def yaml_error_line(path: str, error: yaml.YAMLError) -> str:
    """`path:line:column: invalid YAML: problem (context at line, column)` from PyYAML's marks."""
    mark = getattr(error, 'problem_mark', None)
    problem = getattr(error, 'problem', None)
    if mark is None or problem is None:
        return f'{path}: invalid YAML: ' + ' '.join(str(error).split())
    context, context_mark = getattr(error, 'context', None), getattr(error, 'context_mark', None)
    where = ''
    if context:
        where = f' ({context}' + (f' started at {_position(context_mark)})' if context_mark else ')')
    return f'{path}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}{where}'


def read_option_yaml(path: str) -> Any:
    """The YAML document in `path`; OptionFileError in one line for a file that cannot be read or
    is not valid YAML. Every entry point reads option files here, with yaml.SafeLoader: a file may
    come from anywhere (`upscale -m downloaded.yml`), and BasicSR's own loader would construct the
    Python objects its tags name."""
    try:
        with open(path, encoding='utf-8') as stream:
            return yaml.safe_load(stream)
    except OSError as error:
        raise OptionFileError(f'cannot read option file {path}: {error.strerror or error}') from error
    except UnicodeDecodeError as error:
        raise OptionFileError(f'{path}: not a text file in UTF-8 ({error.reason} at byte {error.start})') from error
    except yaml.YAMLError as error:
        raise OptionFileError(yaml_error_line(str(path), error)) from error
