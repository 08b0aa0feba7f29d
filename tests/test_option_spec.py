"""Declared options (hat_basicsr.utils.option_spec): what the checker accepts is what the schema accepts."""

from __future__ import annotations

import pytest

from hat_basicsr.utils.option_spec import (
    Option,
    OptionOrWords,
    PatternSection,
    Section,
    section_from_signature,
    section_problem,
)

FREQ = Option('save_checkpoint_freq', 'integer', minimum=1, required=True)
DECAY = Option('ema_decay', 'number', minimum=0, maximum=1)
LR = Option('lr', 'number', above=0)
IMG_SIZE = Option('img_size', ('integer', 'integers'), minimum=1, length=2)
BACKEND = Option('type', 'string', choices=('disk', 'lmdb'))


@pytest.mark.parametrize(
    'option, accepted, refused',
    [
        (FREQ, [1, 5000, 5e3], [0, -1, 2.5, True, '5000', None]),
        (DECAY, [0, 0.999, 1], [2, -0.1, float('nan'), '0.9', False]),
        (LR, [2e-4, 1], [0, -1e-4, '2e-4', float('inf')]),
        (IMG_SIZE, [64, [64, 48]], [0, [64], [64, 0], [64, 48, 2], '64']),
        (BACKEND, ['disk', 'lmdb'], ['Disk', 1, None]),
    ],
)
def test_option_accepts_and_refuses(option: Option, accepted: list, refused: list):
    assert [value for value in accepted if not option.accepts(value)] == []
    assert [value for value in refused if option.accepts(value)] == []


def test_expected_texts_name_the_bounds():
    assert FREQ.expected() == 'an integer >= 1'
    assert DECAY.expected() == 'a number >= 0 and <= 1'
    assert LR.expected() == 'a number > 0'
    assert IMG_SIZE.expected() == 'an integer >= 1 or a list of 2 integers >= 1'
    assert BACKEND.expected() == "one of ['disk', 'lmdb']"
    assert Option('x', 'integer', expected_text='a positive integer (pixels)').expected() == (
        'a positive integer (pixels)'
    )


def test_unknown_kind_is_refused_at_declaration():
    with pytest.raises(ValueError, match='unknown kind'):
        Option('x', 'float')


def test_section_lists_refusals_unknown_and_required_keys():
    section = Section((FREQ, DECAY))
    node = {'save_checkpoint_freq': 0, 'ema_decay': 0.9, 'ema_decy': 0.9}
    assert list(section.refusals(node)) == [('save_checkpoint_freq', 0, 'an integer >= 1')]
    assert section.unknown(node) == ['ema_decy']
    assert Section((FREQ,), closed=False).unknown(node) == []
    assert section.required() == ['save_checkpoint_freq']
    assert section['ema_decay'] is DECAY
    with pytest.raises(ValueError, match='declared twice'):
        Section((FREQ, FREQ))


def test_json_schema_of_a_section():
    schema = Section((FREQ, LR, IMG_SIZE, BACKEND), doc='logger').json_schema()
    assert schema['required'] == ['save_checkpoint_freq']
    assert schema['additionalProperties'] is False
    assert schema['properties']['save_checkpoint_freq'] == {'type': 'number', 'multipleOf': 1, 'minimum': 1}
    assert schema['properties']['lr'] == {'type': 'number', 'exclusiveMinimum': 0}
    assert schema['properties']['type'] == {'enum': ['disk', 'lmdb']}
    assert schema['properties']['img_size']['anyOf'][1] == {
        'type': 'array',
        'items': {'type': 'number', 'multipleOf': 1, 'minimum': 1},
        'minItems': 2,
        'maxItems': 2,
    }


def test_section_from_signature_reads_kinds_required_and_kwargs():
    def loss(loss_weight: float = 1.0, reduction: str = 'mean', betas: tuple = (0.9, 0.99), *, target):
        return None

    section = section_from_signature(loss)
    assert section.closed and section.required() == ['target']
    assert [section[name].kind for name in ('loss_weight', 'reduction', 'betas', 'target')] == [
        'number',
        'string',
        'numbers',
        'any',
    ]
    assert not section_from_signature(lambda weight=1.0, **more: None).closed
    assert section_from_signature(loss, skip=('target',)).required() == []


def test_an_option_can_refuse_integral_floats():
    """HAT's channel counts size its layers: `64.0` is refused there, while BasicSR's counts take `5e3`."""
    channels = Option('embed_dim', 'integer', minimum=1, floats_as_integers=False)
    per_rhag = Option('depths', 'integers', minimum=1, floats_as_integers=False)
    assert channels.accepts(64) and not channels.accepts(64.0) and not channels.accepts(True)
    assert per_rhag.accepts([6, 6]) and not per_rhag.accepts([6, 6.0])
    assert channels.json_schema() == {'type': 'integer', 'minimum': 1}
    assert FREQ.json_schema() == {'type': 'number', 'multipleOf': 1, 'minimum': 1}


def test_section_problem_says_the_first_problem_in_the_checkers_words():
    section = Section((FREQ, DECAY))
    assert section_problem({'save_checkpoint_freq': 5, 'ema_decay': 0.9}, section, 'logger', 'x') is None
    assert (
        section_problem({'save_checkpoint_freq': 5, 'ema_decy': 0.9, 'type': 'T'}, section, 'logger', 'X', ('type',))
        == "logger.ema_decy is not an option of X (did you mean 'ema_decay'?); "
        "it takes ['ema_decay', 'save_checkpoint_freq']"
    )
    assert section_problem({'save_checkpoint_freq': 0}, section, '', 'X') == (
        'save_checkpoint_freq: got 0, expected an integer >= 1'
    )
    assert section_problem({}, section, 'logger', 'X') == 'logger.save_checkpoint_freq is missing; X needs it'


def test_an_option_or_words_takes_the_words_and_the_kind():
    num_gpu = OptionOrWords('num_gpu', 'integer', words=('auto',), minimum=0)
    assert [value for value in ('auto', 0, 8) if not num_gpu.accepts(value)] == []
    assert [value for value in ('two', -1, None, 1.5) if num_gpu.accepts(value)] == []
    assert num_gpu.expected() == "'auto' or an integer >= 0"
    assert num_gpu.json_schema() == {'anyOf': [{'enum': ['auto']}, {'type': 'number', 'multipleOf': 1, 'minimum': 0}]}


def test_a_pattern_section_takes_keys_matching_its_patterns():
    section = PatternSection(
        (Option('resume_state', ('string', 'null')),), patterns=(Option(r'strict_load_\w+', 'boolean'),)
    )
    node = {'resume_state': None, 'strict_load_g': 'yes', 'strict_load_d': True, 'strict_loads': True}
    assert section.unknown(node) == ['strict_loads']
    assert list(section.refusals(node)) == [('strict_load_g', 'yes', 'true or false')]
    schema = section.json_schema()
    assert schema['patternProperties'] == {r'^strict_load_\w+$': {'type': 'boolean'}}
    assert schema['additionalProperties'] is False
