"""`hat-basicsr schema`: the JSON Schema of option files refuses what the option checker refuses,
accepts every shipped option file, and is shipped as options/hat_basicsr.schema.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import yaml
from jsonschema import Draft202012Validator

from hat_basicsr.cli import main
from hat_basicsr.cli.schema import option_schema
from hat_basicsr.errors import OptionFileError
from hat_basicsr.option_check import check_options

from helpers import REPO_ROOT, run_python

OPTIONS = REPO_ROOT / 'options'
SHIPPED = OPTIONS / 'hat_basicsr.schema.json'
OPTION_FILES = sorted(OPTIONS.rglob('*.yml'))
TRAIN_FILE = OPTIONS / 'train' / 'HAT_SRx2.yml'
DEMO_FILE = OPTIONS / 'train' / 'demo' / 'HAT-tiny_SRx2_demo.yml'
TILE_FILE = OPTIONS / 'test' / 'HAT_SRx4_ImageNet-pretrain_tile.yml'


@pytest.fixture(scope='module')
def validator() -> Draft202012Validator:
    return Draft202012Validator(option_schema())


def schema_errors(validator: Draft202012Validator, opt: Any) -> List[str]:
    return [f'{"/".join(map(str, error.absolute_path))}: {error.message}' for error in validator.iter_errors(opt)]


def load(path: Path) -> Dict:
    return yaml.safe_load(path.read_text(encoding='utf-8'))


def is_train(path: Path) -> bool:
    return path.relative_to(OPTIONS).parts[0] == 'train'


def test_the_schema_is_a_valid_draft_2020_12_schema():
    schema = option_schema()
    Draft202012Validator.check_schema(schema)
    assert schema['$schema'] == 'https://json-schema.org/draft/2020-12/schema'


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda path: str(path.relative_to(OPTIONS)))
def test_every_shipped_option_file_validates(validator, path):
    assert schema_errors(validator, load(path)) == []


def setter(*keys: str) -> Callable[[Dict, Any], None]:
    def set_value(opt: Dict, value: Any) -> None:
        node = opt
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return set_value


# (option file, option path, value): the five, then more the checker refuses.
REFUSED = [
    (TRAIN_FILE, 'train.ema_decay', 2),
    (TRAIN_FILE, 'train.optim_g.lr', '2e-4'),
    (TRAIN_FILE, 'datasets.train.gt_size', -64),
    (TRAIN_FILE, 'logger.save_checkpoint_freq', 0),
    (TRAIN_FILE, 'network_g.window_size', 'seven'),
    (TILE_FILE, 'tile.tile_size', 0),
    (TRAIN_FILE, 'logger.keep_checkpoints', 0),
    (TRAIN_FILE, 'num_gpu', -1),
    (TRAIN_FILE, 'datasets.train.io_backend.type', 'disc'),
    (TRAIN_FILE, 'logger.print_frequency', 100),
    (TRAIN_FILE, 'val.save_images', True),
    (TRAIN_FILE, 'path.pretrained_network_g', 'net_g.pth'),
    (TRAIN_FILE, 'train.scheduler.milestones', 'soon'),
    (DEMO_FILE, 'datasets.train.batch_size_per_gpu', 0),
    (DEMO_FILE, 'datasets.val.use_hflip', 'yes'),
    (DEMO_FILE, 'train.pixel_opt.reduction', 1),
]
ACCEPTED = [
    (TRAIN_FILE, 'train.ema_decay', 0),
    (TRAIN_FILE, 'num_gpu', 'auto'),
    (TRAIN_FILE, 'logger.keep_checkpoints', None),
    (TRAIN_FILE, 'logger.keep_checkpoints', 3),
    (TRAIN_FILE, 'logger.save_checkpoint_freq', 5e3),
    (TRAIN_FILE, 'path.param_key_g', 'params'),
]


def mutated(path: Path, option: str, value: Any) -> Dict:
    opt = copy.deepcopy(load(path))
    setter(*option.split('.'))(opt, value)
    return opt


@pytest.mark.parametrize('path, option, value', REFUSED, ids=[f'{option}={value!r}' for _, option, value in REFUSED])
def test_what_the_checker_refuses_the_schema_refuses(validator, path, option, value):
    opt = mutated(path, option, value)
    with pytest.raises(OptionFileError, match=option.replace('.', r'\.')):
        check_options(opt, str(path), is_train(path))
    assert schema_errors(validator, opt) != []


@pytest.mark.parametrize('path, option, value', ACCEPTED, ids=[f'{option}={value!r}' for _, option, value in ACCEPTED])
def test_what_the_checker_accepts_the_schema_accepts(validator, path, option, value):
    opt = mutated(path, option, value)
    assert check_options(opt, str(path), is_train(path)) == []
    assert schema_errors(validator, opt) == []


def test_a_network_is_checked_against_its_own_type(validator):
    opt = mutated(TRAIN_FILE, 'network_g.window_size', 'seven')
    assert any(error.startswith('network_g/window_size:') for error in schema_errors(validator, opt))
    opt['network_g'] = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 'many'}
    assert any(error.startswith('network_g/num_feat:') for error in schema_errors(validator, opt))


def test_the_command_prints_the_schema_or_writes_it(capsys, tmp_path):
    assert main(['schema']) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == option_schema()
    output = tmp_path / 'schema.json'
    assert main(['schema', '--output', str(output)]) == 0
    assert capsys.readouterr().out == ''
    assert output.read_text(encoding='utf-8') == printed


def test_the_shipped_schema_is_what_the_command_prints(tmp_path):
    printed = run_python(['-c', 'import sys; from hat_basicsr.cli import main; sys.exit(main())', 'schema'], tmp_path)
    assert SHIPPED.read_text(encoding='utf-8') == printed.stdout, (
        'options/hat_basicsr.schema.json is out of date: regenerate it with '
        '`hat-basicsr schema --output options/hat_basicsr.schema.json`'
    )


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda path: str(path.relative_to(OPTIONS)))
def test_every_shipped_option_file_names_the_schema_for_editors(path):
    first_line = path.read_text(encoding='utf-8').splitlines()[0]
    prefix = '# yaml-language-server: $schema='
    assert first_line.startswith(prefix)
    assert (path.parent / first_line.removeprefix(prefix)).resolve() == SHIPPED
