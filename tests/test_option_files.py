"""The bicubic-SR option files (HAT-S / HAT / HAT-L, train, test and demo) against the reference
(REFERENCE §1 variants and parameter counts, §2 recipes): networks build with the expected size,
recipes match, dataset keys are ones their dataset reads, and BasicSR builds the model from each
file on CPU. Every file under options/ (the Real-HAT ones too) must be listed in options/README.md."""

import copy
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
import yaml

import hat_basicsr  # noqa: F401  (registers HAT, HATModel, ImageNetPairedDataset)
from hat_basicsr.utils.option_yaml import read_option_yaml
from hat_basicsr.utils.tiling import TileOptions

from basicsr.archs import build_network
from basicsr.models import build_model

REPO = Path(__file__).resolve().parents[1]
OPTIONS = REPO / 'options'
NAME = re.compile(r'^(HAT-S|HAT-L|HAT)_SRx([234])(?:_(ImageNet-pretrain|ImageNet-finetune))?')
EVERY_FILE = sorted(OPTIONS.rglob('*.yml'))
DEMO_FILES = sorted((OPTIONS / 'train' / 'demo').glob('*.yml'))
TRAIN_FILES = sorted(p for p in (OPTIONS / 'train').glob('*.yml') if NAME.match(p.stem))
TEST_FILES = sorted(p for p in (OPTIONS / 'test').glob('*.yml') if NAME.match(p.stem))
RELEASE_FILES = TRAIN_FILES + TEST_FILES
ALL_FILES = RELEASE_FILES + DEMO_FILES

VARIANTS = {
    'HAT-S': {'embed_dim': 144, 'depths': [6] * 6, 'num_heads': [6] * 6, 'compress_ratio': 24, 'squeeze_factor': 24},
    'HAT': {'embed_dim': 180, 'depths': [6] * 6, 'num_heads': [6] * 6, 'compress_ratio': 3, 'squeeze_factor': 30},
    'HAT-L': {'embed_dim': 180, 'depths': [6] * 12, 'num_heads': [6] * 12, 'compress_ratio': 3, 'squeeze_factor': 30},
}
COMMON = {
    'type': 'HAT',
    'in_chans': 3,
    'img_size': 64,
    'window_size': 16,
    'overlap_ratio': 0.5,
    'mlp_ratio': 2,
    'conv_scale': 0.01,
    'img_range': 1.0,
    'upsampler': 'pixelshuffle',
    'resi_connection': '1conv',
}
PARAMS = {
    ('HAT-S', 2): 9_473_471,
    ('HAT-S', 3): 9_658_111,
    ('HAT-S', 4): 9_621_183,
    ('HAT', 2): 20_624_795,
    ('HAT', 3): 20_809_435,
    ('HAT', 4): 20_772_507,
    ('HAT-L', 2): 40_698_863,
    ('HAT-L', 3): 40_883_503,
    ('HAT-L', 4): 40_846_575,
}
RECIPES = {  # lr, iterations, milestones
    'scratch': (2e-4, 500_000, [250_000, 400_000, 450_000, 475_000]),
    'x4_from_x2': (1e-4, 250_000, [125_000, 200_000, 225_000, 240_000]),
    'ImageNet-pretrain': (2e-4, 800_000, [300_000, 500_000, 650_000, 700_000, 750_000]),
    'ImageNet-finetune': (1e-5, 250_000, [125_000, 200_000, 225_000, 240_000]),
}
# Keys each dataset class reads (BasicSR 1.4.2 sources; hat_basicsr's docstring), plus loader keys.
LOADER_KEYS = {
    'name',
    'type',
    'use_shuffle',
    'num_worker_per_gpu',
    'batch_size_per_gpu',
    'dataset_enlarge_ratio',
    'prefetch_mode',
    'pin_memory',
    'persistent_workers',
    'num_prefetch_queue',
}
DATASET_KEYS = {
    'PairedImageDataset': (
        {'dataroot_gt', 'dataroot_lq', 'io_backend'},
        {'meta_info_file', 'filename_tmpl', 'gt_size', 'use_hflip', 'use_rot', 'color', 'mean', 'std'},
    ),
    'SingleImageDataset': ({'dataroot_lq', 'io_backend'}, {'meta_info_file', 'color', 'mean', 'std'}),
    'ImageNetPairedDataset': (
        {'dataroot_gt', 'io_backend'},
        {'meta_info', 'meta_info_file', 'gt_size', 'use_hflip', 'use_rot', 'color', 'mean', 'std', 'skip_corrupt'},
    ),
}
TRAIN_ONLY_KEYS = {'gt_size', 'use_hflip', 'use_rot'}
BENCHMARKS = ['Set5', 'Set14', 'Urban100', 'BSD100', 'Manga109']


def load(path: Path) -> Dict:
    """The option file as every entry point reads it (hat_basicsr.utils.option_yaml)."""
    return read_option_yaml(str(path))


def variant_and_scale(path: Path) -> Tuple[str, int, str]:
    match = NAME.match(path.stem)
    assert match, f'{path.name}: name should read <HAT-S|HAT|HAT-L>_SRx<scale>[_ImageNet-pretrain|-finetune]'
    return match.group(1), int(match.group(2)), match.group(3) or ''


def train_recipe(path: Path) -> str:
    variant, scale, stage = variant_and_scale(path)
    if stage:
        return stage
    return 'x4_from_x2' if (variant, scale) == ('HAT', 4) else 'scratch'


@lru_cache(maxsize=None)
def parameter_count(network_yaml: str) -> int:
    """Built once per distinct network_g, on the meta device: shapes without storage or random
    init (initialising HAT-L's 40M parameters takes tens of seconds on a busy 2-core CPU)."""
    with torch.device('meta'):
        net = build_network(yaml.safe_load(network_yaml))
    assert type(net).__name__ == 'HAT'
    return sum(p.numel() for p in net.parameters())


def tiny(network_g: Dict) -> Dict:
    """A few-thousand-parameter HAT with the same upscale: the model-building tests exercise the
    rest of each file (datasets, paths, training and tile options), not HAT-L's size."""
    return {
        **network_g,
        'embed_dim': 12,
        'depths': [1],
        'num_heads': [2],
        'window_size': 4,
        'compress_ratio': 3,
        'squeeze_factor': 4,
    }


def rel(path: Path) -> str:
    return str(path.relative_to(OPTIONS))


def test_every_option_file_is_listed_in_the_options_readme():
    readme = (OPTIONS / 'README.md').read_text()
    assert len(ALL_FILES) == 18 + 11 + 3
    for path in EVERY_FILE:
        assert f'`{rel(path)}`' in readme, f'options/README.md does not list {rel(path)}'


@pytest.mark.parametrize('path', ALL_FILES, ids=rel)
def test_common_settings(path: Path):
    opt = load(path)
    assert opt['model_type'] == 'HATModel'
    assert opt['network_g']['upscale'] == opt['scale']
    assert opt['num_gpu'] == (0 if path in DEMO_FILES else 'auto')
    if path not in DEMO_FILES:
        assert opt['name'] == path.stem


@pytest.mark.parametrize('path', RELEASE_FILES, ids=rel)
def test_network_is_the_reference_variant(path: Path):
    variant, scale, _ = variant_and_scale(path)
    opt = load(path)
    expected = {**COMMON, **VARIANTS[variant], 'upscale': scale}
    assert {key: opt['network_g'].get(key) for key in expected} == expected
    assert parameter_count(yaml.safe_dump(dict(opt['network_g']))) == PARAMS[(variant, scale)]


@pytest.mark.parametrize('path', TRAIN_FILES, ids=rel)
def test_train_recipe(path: Path):
    variant, scale, _ = variant_and_scale(path)
    recipe = train_recipe(path)
    lr, iterations, milestones = RECIPES[recipe]
    opt = load(path)
    train = opt['train']
    assert train['optim_g'] == {'type': 'Adam', 'lr': lr, 'weight_decay': 0, 'betas': [0.9, 0.99]}
    assert train['scheduler'] == {'type': 'MultiStepLR', 'milestones': milestones, 'gamma': 0.5}
    assert train['total_iter'] == iterations and train['ema_decay'] == 0.999
    assert train['pixel_opt']['type'] == 'L1Loss'
    data = opt['datasets']['train']
    assert data['type'] == ('ImageNetPairedDataset' if recipe == 'ImageNet-pretrain' else 'PairedImageDataset')
    assert data['batch_size_per_gpu'] == 4 and data['gt_size'] == 64 * scale
    assert data['use_hflip'] is True and data['use_rot'] is True
    if data['type'] == 'PairedImageDataset':
        assert data['dataroot_gt'].startswith('datasets/DF2K/') and data['dataroot_lq'].endswith(f'X{scale}_sub')
    val = opt['datasets']['val']
    assert val['name'] == 'Set5' and val['dataroot_lq'] == f'datasets/Set5/LRbicx{scale}'
    for metric in ('psnr', 'ssim'):
        assert opt['val']['metrics'][metric]['crop_border'] == scale
        assert opt['val']['metrics'][metric]['test_y_channel'] is True

    path_opt = opt['path']
    if recipe == 'x4_from_x2':
        assert path_opt['pretrain_network_g'] == 'experiments/HAT_SRx2/models/net_g_latest.pth'
        assert path_opt['strict_load_g'] is False
    elif recipe == 'ImageNet-finetune':
        pretrained = f'experiments/{variant}_SRx{scale}_ImageNet-pretrain/models/net_g_latest.pth'
        assert path_opt['pretrain_network_g'] == pretrained and path_opt['strict_load_g'] is True
        assert (OPTIONS / 'train' / f'{variant}_SRx{scale}_ImageNet-pretrain.yml').exists()
    else:
        assert path_opt['pretrain_network_g'] is None


def test_the_release_training_set_is_complete():
    names = {path.stem for path in TRAIN_FILES}
    expected = {f'HAT-S_SRx{s}' for s in (2, 3, 4)} | {'HAT_SRx2', 'HAT_SRx3', 'HAT_SRx4'}
    expected |= {
        f'{v}_SRx{s}_ImageNet-{stage}'
        for v in ('HAT', 'HAT-L')
        for s in (2, 3, 4)
        for stage in ('pretrain', 'finetune')
    }
    assert names == expected


@pytest.mark.parametrize('path', TEST_FILES, ids=rel)
def test_test_file(path: Path):
    variant, scale, _ = variant_and_scale(path)
    opt = load(path)
    weights = Path(opt['path']['pretrain_network_g'])
    assert weights.parent == Path('experiments/pretrained_models')
    assert weights.name.startswith(f'{variant}_SRx{scale}') and weights.suffix == '.pth'
    assert opt['path']['param_key_g'] == 'params_ema' and opt['path']['strict_load_g'] is True
    datasets = list(opt['datasets'].values())
    if path.stem.endswith('-LR'):
        assert [d['type'] for d in datasets] == ['SingleImageDataset'] and 'metrics' not in opt['val']
        return
    assert [d['name'] for d in datasets] == BENCHMARKS
    for data in datasets:
        assert data['dataroot_lq'] == f'datasets/{data["name"]}/LRbicx{scale}'
    for metric in ('psnr', 'ssim'):
        assert opt['val']['metrics'][metric] == {
            'type': f'calculate_{metric}',
            'crop_border': scale,
            'test_y_channel': True,
        }
    if path.stem.endswith('_tile'):
        assert opt['tile'] == {'tile_size': 512, 'tile_pad': 32}


def test_every_variant_and_scale_has_a_test_file():
    names = {path.stem for path in TEST_FILES}
    assert {f'{v}_SRx{s}' for v in VARIANTS for s in (2, 3, 4)} <= names


@pytest.mark.parametrize('path', ALL_FILES, ids=rel)
def test_dataset_keys_are_read_by_their_dataset(path: Path):
    for phase, data in load(path)['datasets'].items():
        assert data['type'] in DATASET_KEYS, f'{rel(path)} {phase}: unknown dataset type {data["type"]}'
        required, optional = DATASET_KEYS[data['type']]
        keys = set(data)
        assert required <= keys, f'{rel(path)} {phase}: missing {sorted(required - keys)}'
        unknown = keys - required - optional - LOADER_KEYS
        assert not unknown, f'{rel(path)} {phase}: {data["type"]} does not read {sorted(unknown)}'
        if not phase.startswith('train'):
            assert not keys & TRAIN_ONLY_KEYS, f'{rel(path)} {phase}: training-only keys'
        assert data['io_backend']['type'] in ('disk', 'lmdb')
        if data['io_backend']['type'] == 'lmdb':
            assert all(data[key].endswith('.lmdb') for key in ('dataroot_gt', 'dataroot_lq') if key in data)


def prepared(opt: Dict, is_train: bool, root: Path) -> Dict:
    """What basicsr's parse_options adds, for CPU and no pretrained weights, with a tiny network."""
    opt = copy.deepcopy(opt)
    opt.update(num_gpu=0, dist=False, rank=0, world_size=1, is_train=is_train, auto_resume=False)
    for phase, data in opt['datasets'].items():
        data['phase'] = phase.split('_')[0]
        data['scale'] = opt['scale']
    opt['path']['pretrain_network_g'] = None
    opt['network_g'] = tiny(opt['network_g'])
    if is_train:
        opt['path'].update(
            experiments_root=str(root),
            models=str(root / 'models'),
            log=str(root),
            training_states=str(root / 'training_states'),
            visualization=str(root / 'visualization'),
        )
    else:
        opt['path'].update(results_root=str(root), log=str(root), visualization=str(root / 'visualization'))
    return opt


@pytest.mark.parametrize('path', ALL_FILES, ids=rel)
def test_basicsr_builds_the_model(path: Path, tmp_path: Path):
    is_train = 'train' in path.relative_to(OPTIONS).parts[0]
    opt = load(path)
    model = build_model(prepared(opt, is_train, tmp_path))
    assert type(model).__name__ == 'HATModel'
    assert type(model.net_g).__name__ == 'HAT' and model.net_g.upscale == opt['scale']
    if is_train:
        assert model.optimizer_g.param_groups[0]['lr'] == opt['train']['optim_g']['lr']
        assert list(model.schedulers[0].milestones) == opt['train']['scheduler']['milestones']
        assert hasattr(model, 'net_g_ema') == (opt['train']['ema_decay'] > 0)
    if 'tile' in opt:
        assert model.tile == TileOptions(**opt['tile'])


def test_x4_from_x2_loads_the_x2_weights_without_the_missing_upsampler(tmp_path: Path):
    x4_opt = load(OPTIONS / 'train' / 'HAT_SRx4.yml')
    x2_net = build_network(tiny(load(OPTIONS / 'train' / 'HAT_SRx2.yml')['network_g']))
    weights = tmp_path / 'net_g_latest.pth'
    torch.save({'params_ema': x2_net.state_dict()}, weights)

    opt = prepared(x4_opt, True, tmp_path)
    opt['path']['pretrain_network_g'] = str(weights)
    loaded = build_model(opt).net_g.state_dict()
    assert torch.equal(loaded['conv_first.weight'], x2_net.state_dict()['conv_first.weight'])
    assert 'upsample.2.weight' in loaded and 'upsample.2.weight' not in x2_net.state_dict()

    opt['path']['strict_load_g'] = True
    with pytest.raises(Exception, match='upsample.2'):
        build_model(opt)
