"""Declared options: what a component reads from an option file, said once.

A component (HAT's constructor, the tile and acceleration options, a dataset, the degradation
settings, BasicSR's sections) declares its options as a `Section` of `Option`s. The same
declaration serves the option checker (hat_basicsr.option_check refuses a value naming the option
path, the value and `Option.expected()`) and the JSON Schema that `hat-basicsr schema` publishes
for YAML editors (`Section.json_schema()`), so the two cannot disagree.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from hat_basicsr.errors import OptionFileError

# The kinds of value an option can hold, as YAML writes them.
KINDS = ('integer', 'number', 'boolean', 'string', 'integers', 'numbers', 'strings', 'mapping', 'null', 'any')
_JSON_TYPES = {
    'integer': 'integer',
    'number': 'number',
    'boolean': 'boolean',
    'string': 'string',
    'mapping': 'object',
    'null': 'null',
}
_ITEM_KINDS = {'integers': 'integer', 'numbers': 'number', 'strings': 'string'}
_NAMES = {
    'integer': 'an integer',
    'number': 'a number',
    'boolean': 'true or false',
    'string': 'a string',
    'integers': 'a list of integers',
    'numbers': 'a list of numbers',
    'strings': 'a list of strings',
    'mapping': 'a mapping',
    'null': '~ (null)',
    'any': 'any value',
}


def is_number(value: Any) -> bool:
    """A finite int or float (YAML's `!!float 1e4` included), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: Any) -> bool:
    """An integral number: BasicSR reads iteration counts and frequencies written `!!float 5e3`."""
    return is_number(value) and float(value).is_integer()


def is_int(value: Any) -> bool:
    """An int as YAML writes it (not a bool, not a float)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _holds_ints(value: Any) -> bool:
    """An int, or a list of ints, as YAML writes them (no bool, no integral float)."""
    return all(map(is_int, value if isinstance(value, (list, tuple)) else [value]))


def _has_kind(value: Any, kind: str) -> bool:
    if kind == 'integer':
        return is_integer(value)
    if kind == 'number':
        return is_number(value)
    if kind == 'boolean':
        return isinstance(value, bool)
    if kind == 'string':
        return isinstance(value, str)
    if kind == 'mapping':
        return isinstance(value, Mapping)
    if kind == 'null':
        return value is None
    if kind in _ITEM_KINDS:
        return isinstance(value, (list, tuple)) and all(_has_kind(item, _ITEM_KINDS[kind]) for item in value)
    return True


@dataclass(frozen=True)
class Option:
    """One option: its kind(s) and the bounds the checker and the schema enforce.

    `minimum`/`maximum` bound a number (or every item of a list) inclusively, `above` exclusively;
    `choices` lists the allowed values; `length` fixes a list's length. A value of another kind,
    or outside the bounds, is refused with `expected()`.
    `floats_as_integers: False` refuses an integral float (`64.0`) where a constructor needs a
    Python int (HAT's channel counts size its layers).
    """

    name: str
    kind: Union[str, Tuple[str, ...]]
    doc: str = ''
    required: bool = False
    minimum: Optional[float] = None
    above: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None
    length: Optional[int] = None
    expected_text: Optional[str] = None
    floats_as_integers: bool = True

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.kinds if kind not in KINDS]
        if unknown:
            raise ValueError(f'option {self.name}: unknown kind(s) {unknown}; known: {KINDS}')

    @property
    def kinds(self) -> Tuple[str, ...]:
        return (self.kind,) if isinstance(self.kind, str) else tuple(self.kind)

    def _in_bounds(self, number: float) -> bool:
        return (
            (self.minimum is None or number >= self.minimum)
            and (self.above is None or number > self.above)
            and (self.maximum is None or number <= self.maximum)
        )

    def accepts(self, value: Any) -> bool:
        if self.choices is not None:
            return any(value == choice and type(value) is type(choice) for choice in self.choices)
        for kind in self.kinds:
            if not _has_kind(value, kind):
                continue
            if not self.floats_as_integers and kind in ('integer', 'integers') and not _holds_ints(value):
                continue
            if kind in ('integer', 'number') and not self._in_bounds(value):
                continue
            if kind in _ITEM_KINDS:
                if self.length is not None and len(value) != self.length:
                    continue
                if _ITEM_KINDS[kind] != 'string' and not all(self._in_bounds(item) for item in value):
                    continue
            return True
        return False

    def _bounds_text(self) -> str:
        low = (
            f'>= {self.minimum:g}'
            if self.minimum is not None
            else f'> {self.above:g}'
            if self.above is not None
            else ''
        )
        high = f'<= {self.maximum:g}' if self.maximum is not None else ''
        return ' and '.join(part for part in (low, high) if part)

    def expected(self) -> str:
        """What the checker says is expected, e.g. 'a positive integer' or "one of ['disk', 'lmdb']"."""
        if self.expected_text:
            return self.expected_text
        if self.choices is not None:
            return f'one of {list(self.choices)}'
        bounds = self._bounds_text()
        names = []
        for kind in self.kinds:
            name = _NAMES[kind]
            if self.length is not None and kind in _ITEM_KINDS:
                name = name.replace('a list of', f'a list of {self.length}')
            if bounds and kind in ('integer', 'number', 'integers', 'numbers'):
                name += f' {bounds}'
            names.append(name)
        return ' or '.join(names)

    def json_schema(self) -> Dict[str, Any]:
        if self.choices is not None:
            schema: Dict[str, Any] = {'enum': list(self.choices)}
        else:
            alternatives = [self._kind_schema(kind) for kind in self.kinds]
            schema = alternatives[0] if len(alternatives) == 1 else {'anyOf': alternatives}
        if self.doc:
            schema['description'] = self.doc
        return schema

    def _bounds_schema(self) -> Dict[str, Any]:
        bounds: Dict[str, Any] = {}
        if self.minimum is not None:
            bounds['minimum'] = self.minimum
        if self.above is not None:
            bounds['exclusiveMinimum'] = self.above
        if self.maximum is not None:
            bounds['maximum'] = self.maximum
        return bounds

    def _kind_schema(self, kind: str) -> Dict[str, Any]:
        if kind == 'any':
            return {}
        if kind in _ITEM_KINDS:
            schema = {'type': 'array', 'items': self._kind_schema(_ITEM_KINDS[kind])}
            if self.length is not None:
                schema.update(minItems=self.length, maxItems=self.length)
            return schema
        schema = {'type': _JSON_TYPES[kind]}
        if kind == 'integer' and self.floats_as_integers:
            # BasicSR reads counts written `!!float 5e3`: any integral number is an integer here.
            schema = {'type': 'number', 'multipleOf': 1}
        if kind in ('integer', 'number'):
            schema.update(self._bounds_schema())
        return schema


@dataclass(frozen=True)
class Section:
    """The options of one mapping in an option file. `closed`: keys it does not declare are refused
    (a misspelled key would otherwise be ignored); an open section leaves them to their reader."""

    options: Tuple[Option, ...]
    doc: str = ''
    closed: bool = True
    names: Tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'names', tuple(option.name for option in self.options))
        duplicated = sorted({name for name in self.names if self.names.count(name) > 1})
        if duplicated:
            raise ValueError(f'options declared twice: {duplicated}')

    def __getitem__(self, name: str) -> Option:
        return self.options[self.names.index(name)]

    def required(self) -> List[str]:
        return [option.name for option in self.options if option.required]

    def unknown(self, node: Mapping) -> List[str]:
        """Keys of `node` this section does not declare (none for an open section)."""
        return [str(key) for key in node if key not in self.names] if self.closed else []

    def refusals(self, node: Mapping) -> Iterator[Tuple[str, Any, str]]:
        """(key, value, expected) for every declared option of `node` whose value is refused."""
        for option in self.options:
            if option.name in node and not option.accepts(node[option.name]):
                yield option.name, node[option.name], option.expected()

    def json_schema(self, extra: Optional[Mapping[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
        """An object schema; `extra` adds properties declared elsewhere (nested sections)."""
        properties = {option.name: option.json_schema() for option in self.options}
        properties.update(extra or {})
        schema: Dict[str, Any] = {'type': 'object', 'properties': properties}
        if self.required():
            schema['required'] = self.required()
        if self.closed:
            schema['additionalProperties'] = False
        if self.doc:
            schema['description'] = self.doc
        return schema

    def merged(self, other: 'Section', doc: str = '') -> 'Section':
        """Both sections' options in one (a dataset type's keys on top of the keys of every dataset)."""
        return Section(self.options + other.options, doc=doc or other.doc, closed=self.closed and other.closed)


def _kind_of_default(default: Any) -> str:
    """The kind a parameter's default implies: an option file writes a tuple default as a list."""
    if isinstance(default, bool):
        return 'boolean'
    if isinstance(default, (int, float)):
        return 'number'
    if isinstance(default, str):
        return 'string'
    if isinstance(default, tuple):
        return 'numbers'
    return 'any'


def section_from_signature(target: Callable, skip: Tuple[str, ...] = ()) -> Section:
    """The options a callable (a BasicSR loss, optimizer, scheduler or arch without declared options)
    takes, read from its signature: a parameter without default is required, one with a default
    takes values of the default's kind, and unknown keys are refused unless it takes **kwargs."""
    parameters = inspect.signature(target).parameters.values()
    options = tuple(
        Option(
            parameter.name,
            'any' if parameter.default is parameter.empty else _kind_of_default(parameter.default),
            required=parameter.default is parameter.empty,
        )
        for parameter in parameters
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) and parameter.name not in skip
    )
    takes_more = any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters)
    return Section(options, closed=not takes_more)


def declared_section(component: Callable, skip: Tuple[str, ...] = ()) -> Section:
    """A registered class's declared OPTIONS, or the options its constructor takes."""
    return getattr(component, 'OPTIONS', None) or section_from_signature(component, skip)


def suggestion(key: str, known: Sequence[str]) -> str:
    """` (did you mean 'name'?)` for a key close to a known one, else ''."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f' (did you mean {close[0]!r}?)' if close else ''


def section_problem(
    node: Mapping, section: Section, path: str, owner: Any, ignore: Tuple[str, ...] = ()
) -> Optional[str]:
    """The first thing wrong with `node` as the options of `owner` at `path` ('' for the top level):
    a key `section` does not declare, a refused value, a missing required key, in the option
    checker's words; None when there is nothing. `ignore` lists keys read by someone else (a
    registry's `type`)."""
    prefix = f'{path}.' if path else ''
    for key in section.unknown(node):
        if key not in ignore:
            return (
                f'{prefix}{key} is not an option of {owner}{suggestion(key, section.names)}; '
                f'it takes {sorted(section.names)}'
            )
    for key, value, expected in section.refusals(node):
        return f'{prefix}{key}: got {value!r}, expected {expected}'
    for name in section.required():
        if name not in node:
            doc = section[name].doc.rstrip('.')
            return f'{prefix}{name} is missing; {owner} needs it' + (f' ({doc})' if doc else '')
    return None


def refuse_problem(
    node: Mapping, section: Section, path: str, owner: Any, source: str = '', ignore: Tuple[str, ...] = ()
) -> None:
    """Raise OptionFileError with section_problem's words, after `source` (the option file) if given."""
    problem = section_problem(node, section, path, owner, ignore)
    if problem:
        raise OptionFileError(f'{source}: {problem}' if source else problem)


@dataclass(frozen=True)
class OptionOrWords(Option):
    """An option that also takes a few fixed words (num_gpu: 'auto' or a count of GPUs)."""

    words: Tuple[str, ...] = ()

    def accepts(self, value: Any) -> bool:
        return (isinstance(value, str) and value in self.words) or super().accepts(value)

    def expected(self) -> str:
        return self.expected_text or ' or '.join([repr(word) for word in self.words] + [super().expected()])

    def json_schema(self) -> Dict[str, Any]:
        schema = super().json_schema()
        description = schema.pop('description', None)
        schema = {'anyOf': [{'enum': list(self.words)}, schema]}
        if description:
            schema['description'] = description
        return schema


@dataclass(frozen=True)
class PatternSection(Section):
    """A section whose keys may also follow patterns (BasicSR's path.pretrain_network_<net>): each
    `patterns` Option is named by the regular expression its keys match."""

    patterns: Tuple[Option, ...] = ()

    def pattern_option(self, key: str) -> Optional[Option]:
        return next((option for option in self.patterns if re.fullmatch(option.name, key)), None)

    def unknown(self, node: Mapping) -> List[str]:
        return [key for key in super().unknown(node) if self.pattern_option(key) is None]

    def refusals(self, node: Mapping) -> Iterator[Tuple[str, Any, str]]:
        yield from super().refusals(node)
        for key, value in node.items():
            option = None if key in self.names else self.pattern_option(str(key))
            if option is not None and not option.accepts(value):
                yield str(key), value, option.expected()

    def json_schema(self, extra: Optional[Mapping[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
        schema = super().json_schema(extra)
        schema['patternProperties'] = {f'^{option.name}$': option.json_schema() for option in self.patterns}
        return schema
