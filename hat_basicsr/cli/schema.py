"""`hat-basicsr schema [--output FILE]`: a JSON Schema (draft 2020-12) of BasicSR option files.

YAML editors complete and check an option file against it; the shipped copy is
options/hat_basicsr.schema.json, named by the first line of every file in options/:

    # yaml-language-server: $schema=../hat_basicsr.schema.json

It is built only from declarations, so it refuses what `hat_basicsr.train` refuses up front:
BasicSR's sections (hat_basicsr.option_sections), and for each registered network, dataset and
model its `OPTIONS` (or, without one, the arguments of its constructor). A network, dataset, loss,
optimizer or scheduler is described by the `type` it names, a model's own top-level keys by
`model_type`. What a schema cannot say (gt_size a multiple of scale, keys needed only in training)
is left to the checker.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping

from hat_basicsr.cli.arguments import add_subcommand

if TYPE_CHECKING:
    from hat_basicsr.utils.option_spec import Option, Section

DRAFT = 'https://json-schema.org/draft/2020-12/schema'
# A dataset's key: its phase, with an optional suffix (train, val, val_2, test_1).
DATASET_KEY = r'^(train|val|test)(_.*)?$'


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_subcommand(subparsers, 'schema', 'JSON Schema of the option files, for YAML editors', __doc__)
    parser.add_argument('--output', type=Path, default=None, help='write the schema to FILE instead of printing it')
    parser.set_defaults(func=run)


def _names(registry: Any) -> List[str]:
    """The names a BasicSR registry answers to (NAME_basicsr is also found as NAME)."""
    return sorted({name.removesuffix('_basicsr') for name in registry._obj_map})


def _nested(option: Option, schema: Dict[str, Any]) -> Dict[str, Any]:
    """The schema of a mapping option whose keys another section declares (`~` allowed if the option allows it)."""
    if 'null' in option.kinds:
        schema = {'anyOf': [{'type': 'null'}, schema]}
    if option.doc:
        schema = {'description': option.doc, **schema}
    return schema


def _typed(section: Section) -> Dict[str, Any]:
    """A component's section as a schema; `type` names the component, so a closed section takes it too."""
    schema = section.json_schema()
    schema['properties'].setdefault('type', {'type': 'string'})
    return schema


def _part(section: Section) -> Dict[str, Any]:
    """The schema of a section that declares only part of its mapping's keys (a dataset class's own
    keys beside those of every dataset, a model's top-level keys), so it cannot refuse the others."""
    schema = section.json_schema()
    schema.pop('additionalProperties', None)
    return schema


def _by_type(schema: Dict[str, Any], key: str, schemas: Mapping[str, Dict[str, Any]]) -> Dict[str, Any]:
    """`schema` with one if/then per value of `key`: the schema `schemas` gives for that value."""
    cases = [
        {'if': {'properties': {key: {'const': name}}, 'required': [key]}, 'then': case}
        for name, case in sorted(schemas.items())
    ]
    if cases:
        schema['allOf'] = schema.get('allOf', []) + cases
    return schema


def _component(names: List[str], schemas: Mapping[str, Dict[str, Any]], doc: str) -> Dict[str, Any]:
    """A mapping naming one of `names` by its `type`, described by that type's schema."""
    schema: Dict[str, Any] = {
        'description': doc,
        'type': 'object',
        'properties': {'type': {'enum': names}},
        'required': ['type'],
    }
    return _by_type(schema, 'type', schemas)


def _datasets_schema() -> Dict[str, Dict[str, Any]]:
    """$defs of a dataset and of the training dataset (the keys only the train phase reads)."""
    from hat_basicsr.option_check import registered_class
    from hat_basicsr.option_sections import (
        DATASET,
        DATASET_TRAINING,
        IO_BACKEND,
        TRAINING_DATASET_KEYS,
        dataset_section,
    )

    from basicsr.utils.registry import DATASET_REGISTRY

    classes = {name: registered_class(DATASET_REGISTRY, name) for name in _names(DATASET_REGISTRY)}
    sections = {name: dataset_section(cls) for name, cls in classes.items() if dataset_section(cls) is not None}
    dataset = DATASET.json_schema(extra={'io_backend': _nested(DATASET['io_backend'], IO_BACKEND.json_schema())})
    dataset['properties']['type'] = {'enum': sorted(classes), 'description': DATASET['type'].doc}
    _by_type(dataset, 'type', {name: _part(section) for name, section in sections.items()})
    training = {
        'allOf': [{'$ref': '#/$defs/dataset'}, {'required': list(TRAINING_DATASET_KEYS)}],
        'description': 'The training dataset: the keys read in the train phase are required.',
    }
    _by_type(training, 'type', {name: {'required': list(keys)} for name, keys in DATASET_TRAINING.items()})
    return {'dataset': dataset, 'training_dataset': training}


def _train_schema() -> Dict[str, Dict[str, Any]]:
    """The schema of `train` and the $defs it refers to (a loss, an optimizer)."""
    from hat_basicsr.option_check import registered_class
    from hat_basicsr.option_sections import (
        LOSS_KEYS,
        OPTIMIZER,
        SCHEDULER,
        SCHEDULERS,
        TRAIN,
        optimizer_arguments,
        scheduler_arguments,
    )
    from hat_basicsr.utils.option_spec import declared_section

    from basicsr.utils.registry import LOSS_REGISTRY

    optimizer = _by_type(
        OPTIMIZER.json_schema(),
        'type',
        {name: _typed(optimizer_arguments(name)) for name in OPTIMIZER['type'].choices},
    )
    scheduler = _by_type(
        SCHEDULER.json_schema(),
        'type',
        {name: _typed(scheduler_arguments(name)) for name in SCHEDULERS},
    )
    losses = _names(LOSS_REGISTRY)
    loss = _component(
        losses,
        {name: _typed(declared_section(registered_class(LOSS_REGISTRY, name))) for name in losses},
        'A registered loss; the other keys are its arguments.',
    )
    nested = {
        'optim_g': {'$ref': '#/$defs/optimizer'},
        'optim_d': {'$ref': '#/$defs/optimizer'},
        'scheduler': scheduler,
        **{key: {'$ref': '#/$defs/loss'} for key in LOSS_KEYS},
    }
    train = TRAIN.json_schema(extra={key: _nested(TRAIN[key], schema) for key, schema in nested.items()})
    return {'train': train, 'loss': loss, 'optimizer': optimizer}


def option_schema() -> Dict[str, Any]:
    """The JSON Schema of an option file, from the declarations of the registered components."""
    from hat_basicsr.archs.acceleration import AccelerationOptions
    from hat_basicsr.option_check import registered_class
    from hat_basicsr.option_sections import DIST_PARAMS, LOGGER, METRIC, PATH, TOP_LEVEL, VAL, WANDB
    from hat_basicsr.utils.option_spec import declared_section
    from hat_basicsr.utils.tiling import TileOptions

    from basicsr.utils.registry import ARCH_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    archs = _names(ARCH_REGISTRY)
    network = _component(
        archs,
        {name: _typed(declared_section(registered_class(ARCH_REGISTRY, name))) for name in archs},
        'A registered network; the other keys are its arguments.',
    )
    metric = METRIC.json_schema()
    metric['properties']['type'] = {'enum': _names(METRIC_REGISTRY), 'description': METRIC['type'].doc}
    datasets = {
        'type': 'object',
        'minProperties': 1,
        'properties': {'train': {'$ref': '#/$defs/training_dataset'}},
        'patternProperties': {DATASET_KEY: {'$ref': '#/$defs/dataset'}},
        'additionalProperties': False,
    }
    train = _train_schema()
    nested = {
        'datasets': datasets,
        'network_g': {'$ref': '#/$defs/network'},
        'network_d': {'$ref': '#/$defs/network'},
        'path': PATH.json_schema(),
        'train': train.pop('train'),
        'val': VAL.json_schema(
            extra={'metrics': _nested(VAL['metrics'], {'type': 'object', 'additionalProperties': metric})}
        ),
        'logger': LOGGER.json_schema(extra={'wandb': _nested(LOGGER['wandb'], WANDB.json_schema())}),
        'dist_params': DIST_PARAMS.json_schema(),
        'acceleration': AccelerationOptions.OPTIONS.json_schema(),
        'tile': TileOptions.OPTIONS.json_schema(),
    }
    schema = TOP_LEVEL.json_schema(extra={key: _nested(TOP_LEVEL[key], value) for key, value in nested.items()})
    schema['properties']['model_type'] = {'enum': _names(MODEL_REGISTRY), 'description': TOP_LEVEL['model_type'].doc}
    models = {name: registered_class(MODEL_REGISTRY, name) for name in _names(MODEL_REGISTRY)}
    _by_type(
        schema,
        'model_type',
        {name: _part(model.OPTIONS) for name, model in models.items() if hasattr(model, 'OPTIONS')},
    )
    return {
        '$schema': DRAFT,
        'title': 'hat-basicsr option file',
        **schema,
        '$defs': {'network': network, **train, **_datasets_schema()},
    }


def schema_text() -> str:
    return json.dumps(option_schema(), indent=2) + '\n'


def run(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding='utf-8')
    return 0
