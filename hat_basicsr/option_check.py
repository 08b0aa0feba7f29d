"""Checks of an option file, run before BasicSR acts on it.

BasicSR reads option values where it first needs them, so a bad one surfaces as a Python error
that names no option (`ZeroDivisionError` for `val_freq: 0`, `KeyError: 'dataroot_gt'`, a cv2
assertion for `gt_size: 0`) or is accepted without a word (`ema_decay: 2` averages the weights
into NaN, `milestones: soon` becomes Counter('soon')). Here every value BasicSR and hat_basicsr
read is checked up front and refused with an OptionFileError naming the option path, the value
and what is expected. Beyond that:

BasicSR turns every `path:` entry it does not know into a folder (a misspelled
`pretrained_network_g` trains from scratch and creates a folder named like the weights file),
ignores misspelled `train:` entries (`ema_decy` turns EMA off), and YAML 1.1 reads `2e-4`
(no dot) as a string, which fails deep inside the optimizer or scheduler.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from hat_basicsr.archs.acceleration import AccelerationOptions
from hat_basicsr.errors import HATArgumentError, OptionFileError
from hat_basicsr.option_sections import (
    DATASET,
    DATASET_TRAINING,
    IO_BACKEND,
    LOGGER,
    LOSS_KEYS,
    METRIC,
    OPTIMIZER,
    PATH,
    SCHEDULER,
    TOP_LEVEL,
    TRAIN,
    TRAINING_DATASET_KEYS,
    VAL,
    dataset_section,
    optimizer_arguments,
    required_in,
    scheduler_arguments,
)
from hat_basicsr.utils.image_io import IMAGE_SUFFIXES
from hat_basicsr.utils.option_spec import Section, declared_section, is_int, is_integer, refuse_problem, section_problem
from hat_basicsr.utils.option_spec import suggestion as _suggestion
from hat_basicsr.utils.option_yaml import read_option_yaml
from hat_basicsr.utils.tiling import TileOptions

# What YAML 1.1 leaves a string although it reads as a number: an exponent without a dot (2e-4).
DOTLESS_EXPONENT = re.compile(r'^[+-]?\d+[eE][+-]?\d+$')

# The datasets that crop gt_size patches in training.
CROPPING_DATASETS = ('PairedImageDataset', 'ImageNetPairedDataset')
# List-file keys per dataset, disk backend (an LMDB lists its keys in its own meta_info.txt).
META_INFO_KEYS = {
    'PairedImageDataset': ('meta_info_file',),
    'SingleImageDataset': ('meta_info_file',),
    'ImageNetPairedDataset': ('meta_info', 'meta_info_file'),
    'RealESRGANDataset': ('meta_info', 'meta_info_file'),
}


def _entries(node: Any, prefix: str = '') -> Iterator[Tuple[str, Any]]:
    """(dotted key, value) for every leaf of a nested option tree."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _entries(value, f'{prefix}{key}.')
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _entries(value, f'{prefix}{index}.')
    else:
        yield prefix[:-1], node


def _joined(path: str, key: str) -> str:
    return f'{path}.{key}' if path else key


def registered_class(registry: Any, name: str) -> Any:
    """What a BasicSR registry holds under `name`, or None. Registry.get's fallback, without the line
    it prints: names registered twice (RealESRGANDataset) also hold NAME_basicsr."""
    return registry._obj_map.get(name) or registry._obj_map.get(f'{name}_basicsr')


class _Checker:
    """Refusals name the option file, the option path, the value and what is expected."""

    def __init__(self, source: str):
        self.source = source

    def refuse(self, path: str, value: Any, expected: str) -> None:
        raise OptionFileError(f'{self.source}: {path}: got {value!r}, expected {expected}')

    def missing(self, path: str, why: str) -> None:
        raise OptionFileError(f'{self.source}: {path} is missing; {why}')

    def require(self, node: Mapping, path: str, key: str, why: str) -> Any:
        if key not in node:
            self.missing(_joined(path, key), why)
        return node[key]

    def mapping(self, value: Any, path: str, what: str) -> Mapping:
        if not isinstance(value, Mapping):
            self.refuse(path, value, f'a mapping of {what}')
        return value

    def registered(self, node: Mapping, path: str, registry: Any, kind: str, key: str = 'type') -> Any:
        """The class `node[key]` names in a BasicSR registry."""
        name = self.require(node, path, key, f'it names the {kind} to build')
        found = registered_class(registry, name) if isinstance(name, str) else None
        if found is None:
            known = list(registry._obj_map)
            self.refuse(
                _joined(path, key),
                name,
                f"the name of a registered {kind} (No object named {name!r} in BasicSR's {kind} registry"
                f'{_suggestion(str(name), known)})',
            )
        return found

    def section(self, node: Mapping, path: str, section: Section, owner: Any) -> None:
        """Refuse keys `section` does not declare, values it refuses, and required keys missing from
        `node` (the options of `owner`, e.g. a loss type; a missing option's doc says why it is needed)."""
        refuse_problem(node, section, path, owner, self.source, ignore=('type',))


def network_problem(network: Mapping, path: str, arch: type) -> Optional[str]:
    """What is wrong with `network` (a network_g-style mapping at `path`) as the arguments of `arch`,
    or None: each argument against the arch's declared OPTIONS (or its signature), then the rules
    between arguments of an arch that has them (HAT.check_arguments), all before anything is built."""
    problem = section_problem(network, declared_section(arch), path, network.get('type'), ignore=('type',))
    check_arguments = getattr(arch, 'check_arguments', None)
    if problem or check_arguments is None:
        return problem
    try:
        check_arguments({key: value for key, value in network.items() if key != 'type'})
    except HATArgumentError as error:
        return f'{path}.{error.argument}: {error.why}'
    return None


def _check_top_level(check: _Checker, opt: Mapping, is_train: bool) -> None:
    from basicsr.utils.registry import MODEL_REGISTRY

    check.section(opt, '', TOP_LEVEL, 'the option file')
    if not opt['name']:
        check.refuse('name', opt['name'], 'a non-empty string')
    check.registered(opt, '', MODEL_REGISTRY, 'model', key='model_type')
    # BasicSR computes with these as Python ints (slices, batch sizes): 2.0 is refused too.
    for key in ('scale', 'num_gpu', 'manual_seed'):
        if isinstance(opt.get(key), float):
            check.refuse(key, opt[key], TOP_LEVEL[key].expected())
    if 'gt_size' in opt:  # the Real-HAT models crop their synthesised pairs to it
        _check_gt_size(check, opt['gt_size'], 'gt_size', opt['scale'])
    known_paths = PATH.names + ('pretrain_network_g', 'strict_load_g', 'param_key_g')
    for key in PATH.unknown(opt['path']):
        raise OptionFileError(
            f'{check.source}: unknown entry path.{key}{_suggestion(key, known_paths)}; BasicSR '
            'would create a folder named after its value'
        )
    check.section(opt['path'], 'path', PATH, 'path')
    for section in ('train', 'logger') if is_train else ('val',):
        check.require(opt, '', section, f'{"training" if is_train else "testing"} reads it')


def _check_gt_size(check: _Checker, gt_size: Any, path: str, scale: int) -> None:
    if not is_integer(gt_size) or gt_size <= 0 or gt_size % scale:
        check.refuse(path, gt_size, f'a positive integer multiple of scale {scale} (the GT patch size)')


def _check_dataset(check: _Checker, phase_key: str, dataset: Any, is_train: bool, scale: int) -> None:
    from basicsr.utils.registry import DATASET_REGISTRY

    path = f'datasets.{phase_key}'
    phase = phase_key.split('_')[0]
    allowed = phase_key == 'train' or phase == 'val' if is_train else phase in ('train', 'val', 'test')
    if not allowed:
        check.refuse(
            path,
            phase_key,
            'a dataset named train, val or val_<N>' if is_train else 'a dataset named test[_<N>] or val[_<N>]',
        )
    dataset = check.mapping(dataset, path, 'dataset options')
    check.section(dataset, path, DATASET, 'a dataset')
    dataset_class = check.registered(dataset, path, DATASET_REGISTRY, 'dataset')
    kind = dataset_class.__name__
    check.section(dataset['io_backend'], f'{path}.io_backend', IO_BACKEND, 'io_backend')
    declared = dataset_section(dataset_class)
    if declared is not None:
        check.section(
            dataset, path, required_in(declared, DATASET_TRAINING.get(kind, ())) if phase == 'train' else declared, kind
        )
    if phase == 'train' and kind in CROPPING_DATASETS and 'gt_size' not in dataset:
        check.missing(f'{path}.gt_size', f'{kind} needs it in training')
    backend_type = dataset['io_backend']['type']
    for key in ('dataroot_gt', 'dataroot_lq'):
        root = dataset.get(key)
        if root is not None and backend_type == 'lmdb' and not root.endswith('.lmdb'):
            check.refuse(f'{path}.{key}', root, 'an LMDB folder whose name ends with .lmdb')
    if phase == 'train':
        if 'gt_size' in dataset and kind in CROPPING_DATASETS:
            _check_gt_size(check, dataset['gt_size'], f'{path}.gt_size', scale)
        check.section(dataset, path, required_in(DATASET, TRAINING_DATASET_KEYS), 'a training dataset')


def _check_training(check: _Checker, opt: Mapping) -> None:
    from basicsr.utils.registry import LOSS_REGISTRY

    train = opt['train']
    check.section(train, 'train', TRAIN, 'train')
    for key in ('optim_g', 'optim_d'):
        if key in train:
            _check_optimizer(check, train[key], f'train.{key}')
    _check_scheduler(check, train['scheduler'])
    for key in LOSS_KEYS:
        if train.get(key):
            loss = train[key]
            loss_class = check.registered(loss, f'train.{key}', LOSS_REGISTRY, 'loss')
            check.section(loss, f'train.{key}', declared_section(loss_class), loss['type'])


def _check_optimizer(check: _Checker, optimizer: Mapping, path: str) -> None:
    check.section(optimizer, path, OPTIMIZER, 'an optimizer')
    check.section(optimizer, path, optimizer_arguments(optimizer['type']), optimizer['type'])
    betas = optimizer.get('betas', [0.9, 0.999])
    if not all(beta < 1 for beta in betas):
        check.refuse(f'{path}.betas', betas, OPTIMIZER['betas'].expected())


def _check_scheduler(check: _Checker, scheduler: Mapping) -> None:
    check.section(scheduler, 'train.scheduler', SCHEDULER, 'a scheduler')
    kind = scheduler['type']
    check.section(scheduler, 'train.scheduler', scheduler_arguments(kind), kind)
    weights = scheduler.get('restart_weights', [1])
    counted = 'periods' if kind == 'CosineAnnealingRestartLR' else 'restarts'
    if len(weights) != len(scheduler.get(counted, [0])):
        check.refuse('train.scheduler.restart_weights', weights, f'one weight for each of {counted}')


def _check_validation(check: _Checker, opt: Mapping, is_train: bool) -> None:
    from basicsr.utils.registry import METRIC_REGISTRY

    val = opt.get('val')
    if val is None:
        return
    check.section(val, 'val', VAL, 'val')
    if is_train:
        check.require(val, 'val', 'val_freq', VAL['val_freq'].doc)
    for name, metric in (val.get('metrics') or {}).items():
        metric = check.mapping(metric, f'val.metrics.{name}', 'metric options')
        check.section(metric, f'val.metrics.{name}', METRIC, 'a metric')
        check.registered(metric, f'val.metrics.{name}', METRIC_REGISTRY, 'metric')


def _check_logger(check: _Checker, opt: Mapping) -> None:
    check.section(opt['logger'], 'logger', LOGGER, 'logger')


def validate_options(opt: Any, source: str, is_train: bool) -> None:
    """Raise OptionFileError for the first value BasicSR or hat_basicsr cannot use (without looking
    at the data: see check_data)."""
    from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

    if not isinstance(opt, Mapping) or not opt:
        holds = repr(type(opt).__name__) if opt else 'nothing'
        raise OptionFileError(
            f'{source}: the option file holds {holds}; expected a mapping of options (name, '
            'model_type, scale, datasets, network_g, ...)'
        )
    check = _Checker(source)
    _check_top_level(check, opt, is_train)
    datasets = opt['datasets']
    if not datasets:
        check.refuse('datasets', datasets, 'at least one dataset')
    if is_train and 'train' not in datasets:
        check.missing('datasets.train', 'training needs a train dataset')
    for phase_key, dataset in datasets.items():
        _check_dataset(check, str(phase_key), dataset, is_train, opt['scale'])
    for key in ('network_g', 'network_d'):
        if key == 'network_g' or key in opt:
            network = check.mapping(check.require(opt, '', key, 'the network to build'), key, 'network options')
            problem = network_problem(network, key, check.registered(network, key, ARCH_REGISTRY, 'arch'))
            if problem:
                raise OptionFileError(f'{source}: {problem}')
    model = registered_class(MODEL_REGISTRY, opt['model_type'])
    # The Real-ESRGAN models read their declared keys only to synthesise training pairs.
    if hasattr(model, 'OPTIONS') and is_train and opt.get('high_order_degradation', True):
        check.section(opt, '', model.OPTIONS, opt['model_type'])
    for key, declared in (('tile', TileOptions), ('acceleration', AccelerationOptions)):
        try:
            declared.from_dict(opt.get(key))
        except OptionFileError as error:
            raise OptionFileError(f'{source}: {error}') from error
    if is_train:
        _check_training(check, opt)
        _check_logger(check, opt)
    _check_validation(check, opt, is_train)


def _has_images(folder: str) -> bool:
    """Whether some image file lies under `folder` (the walk stops at the first folder holding one)."""
    return any(name.lower().endswith(IMAGE_SUFFIXES) for _, _, files in os.walk(folder) for name in files)


def _first_entry(list_file: str) -> Optional[str]:
    with open(list_file, encoding='utf-8') as lines:
        return next((line for line in lines if line.strip()), None)


def check_data(opt: Mapping, source: str) -> None:
    """Dataset folders, LMDBs and list files must exist and hold something: an empty one makes
    BasicSR divide by a zero epoch length. Relative paths are taken from the current directory,
    as BasicSR takes them."""
    check = _Checker(source)
    for phase_key, dataset in opt['datasets'].items():
        path = f'datasets.{phase_key}'
        kind, backend = dataset['type'], dataset['io_backend']['type']
        if backend == 'memcached':  # paths are keys of a server
            continue
        lmdb = backend == 'lmdb'
        lists = [] if lmdb else [key for key in META_INFO_KEYS.get(kind, ()) if dataset.get(key) is not None]
        for key in lists[:1]:
            list_file = str(dataset[key])
            if not os.path.isfile(list_file):
                check.refuse(f'{path}.{key}', list_file, 'an existing list file (one image path per line)')
            if _first_entry(list_file) is None:
                check.refuse(f'{path}.{key}', list_file, 'a list file naming at least one image; it is empty')
        for key in ('dataroot_gt', 'dataroot_lq'):
            root = dataset.get(key)
            if root is None or (kind == 'ImageNetPairedDataset' and key == 'dataroot_lq'):
                continue
            root = os.path.expanduser(root)
            if not os.path.isdir(root):
                check.refuse(f'{path}.{key}', root, 'an existing folder' + (' (an LMDB)' if lmdb else ' of images'))
            if lmdb:
                meta = os.path.join(root, 'meta_info.txt')
                if not os.path.isfile(os.path.join(root, 'data.mdb')) or not os.path.isfile(meta):
                    check.refuse(
                        f'{path}.{key}',
                        root,
                        "an LMDB folder with data.mdb and meta_info.txt (as BasicSR's make_lmdb_from_imgs writes)",
                    )
                if _first_entry(meta) is None:
                    check.refuse(f'{path}.{key}', root, 'an LMDB with at least one key; its meta_info.txt is empty')
            elif not lists and not _has_images(root):
                check.refuse(f'{path}.{key}', root, f'a folder with images ({", ".join(IMAGE_SUFFIXES)}); it has none')


def check_options(opt: Mapping, source: str, is_train: bool) -> List[str]:
    """Raise OptionFileError for entries BasicSR would misread or cannot use; return warnings for
    unknown `train:` entries (a custom model may read them, so they are not refused)."""
    if isinstance(opt, Mapping):
        for key, value in _entries(opt):
            if isinstance(value, str) and DOTLESS_EXPONENT.match(value.strip()):
                raise OptionFileError(
                    f'{source}: {key}: {value!r} is read as a string by YAML; write it with a '
                    f'dot (e.g. {value.lower().replace("e", ".0e", 1)})'
                )
    validate_options(opt, source, is_train)
    paths = opt['path']
    if not is_train and 'network_g' in opt and not paths.get('pretrain_network_g'):
        raise OptionFileError(
            f'{source}: path.pretrain_network_g is not set: testing would score a randomly initialised network'
        )
    train = opt['train'] if is_train else {}
    return [
        f'{source}: train.{key} is not read by BasicSR or hat_basicsr{_suggestion(str(key), TRAIN.names)}; '
        'it has no effect unless a custom model reads it'
        for key in train
        if key not in TRAIN.names
    ]


def launch_error(num_gpu: Any, world_size: int, source: str) -> Optional[str]:
    """HAT issue #114: an option file for N GPUs started without torchrun runs as one process of
    world size 1 (BasicSR falls back to DataParallel over the GPUs it sees, not the DDP training the
    file was written for) and users found it trained a fraction of the planned samples. The
    one-line refusal naming torchrun, or None."""
    if is_int(num_gpu) and num_gpu > 1 and world_size == 1:
        return (
            f'{source}: num_gpu: {num_gpu} but started as one process: launch with torchrun '
            f'--nproc_per_node={num_gpu} -m hat_basicsr.train -opt {source} --launcher pytorch, or set num_gpu: 1'
        )
    return None


def argument_value(args: Sequence[str], flag: str) -> Optional[str]:
    """The value of `flag` (`flag VALUE` or `flag=VALUE`) among BasicSR's arguments, if given."""
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(f'{flag}='):
            return arg.split('=', 1)[1]
    return None


def option_file_argument(args: Sequence[str]) -> Optional[str]:
    """The value of BasicSR's -opt argument, if given."""
    return argument_value(args, '-opt')


def forced_entries(args: Sequence[str]) -> List[str]:
    """The `key:key=value` entries of BasicSR's --force_yml argument."""
    if '--force_yml' not in args:
        return []
    entries = []
    for arg in args[args.index('--force_yml') + 1 :]:
        if arg.startswith('-'):
            break
        entries.append(arg)
    return entries


def apply_forced(opt: Dict, entries: Sequence[str], source: str) -> None:
    """Apply --force_yml entries as BasicSR's parse_options will (an existing parent key is needed)."""
    from basicsr.utils.options import _postprocess_yml_value

    for entry in entries:
        keys, separator, value = entry.partition('=')
        *parents, leaf = [key.strip() for key in keys.split(':')]
        node = opt
        for depth, key in enumerate(parents):
            if not separator or not isinstance(node, Mapping) or key not in node:
                raise OptionFileError(
                    f'--force_yml {entry}: {source} has no option {":".join(parents[: depth + 1])}; '
                    'expected key:key=value on existing options'
                )
            node = node[key]
        if not separator or not isinstance(node, dict):
            raise OptionFileError(f'--force_yml {entry}: expected key:key=value on existing options')
        node[leaf] = _postprocess_yml_value(value.strip())


def precheck_option_file(args: Sequence[str], prog: str, is_train: bool) -> None:
    """check_options and check_data on the -opt file with the --force_yml entries applied (no -opt
    is left to BasicSR's argument parser to report)."""
    path = option_file_argument(args)
    if path is None:
        return
    opt = read_option_yaml(path)
    if isinstance(opt, dict):
        apply_forced(opt, forced_entries(args), path)
    for warning in check_options(opt, path, is_train):
        print(f'{prog}: warning: {warning}', file=sys.stderr)
    if is_train and argument_value(args, '--launcher') in (None, 'none'):
        launched = os.environ.get('WORLD_SIZE', '1')
        if launched.isdigit() and int(launched) > 1:
            raise OptionFileError(
                f'{path}: started by torchrun as {launched} processes without --launcher pytorch, so each '
                'would train alone: add --launcher pytorch'
            )
        refusal = launch_error(opt['num_gpu'], 1, path)
        if refusal:
            raise OptionFileError(refusal)
    check_data(opt, path)
