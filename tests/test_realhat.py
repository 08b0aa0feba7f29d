"""Real-HAT (MSE) and Real-HAT-GAN on CPU: the shipped option files, shrunk to a tiny HAT, train
on real photos through BasicSR's RealESRGANDataset and Real-ESRGAN degradations; the pool, the
discriminator step, checkpoints, the perceptual loss's VGG19 weights and tiled inference."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterator

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F
from torchvision.models import vgg19

import hat_basicsr  # noqa: F401  (registers HAT and the Real-HAT models)
from hat_basicsr.errors import MissingVGGWeightsError, NonFiniteTrainingError, OptionFileError
from hat_basicsr.models.basicsr_fixes import BasicSRFixesMixin
from hat_basicsr.models.hat_model import HATModel, HATModelMixin
from hat_basicsr.models.real_degradation import RealDegradationMixin, vgg_weights_url
from hat_basicsr.models.realhat_gan_model import RealHATGANModel
from hat_basicsr.models.realhat_mse_model import RealHATMSEModel
from hat_basicsr.test import main as run_test_cli
from hat_basicsr.training_plan import make_plan

from basicsr.archs import vgg_arch
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from basicsr.utils import set_random_seed

from helpers import TINY_HAT as TINY_HAT_X2
from helpers import read_log, run_python

REPO_ROOT = Path(__file__).resolve().parents[1]
MSE_YML = REPO_ROOT / 'options' / 'train' / 'Real-HAT_MSE_SRx4.yml'
GAN_YML = REPO_ROOT / 'options' / 'train' / 'Real-HAT_GAN_SRx4.yml'
TILE_YML = REPO_ROOT / 'options' / 'test' / 'Real-HAT_GAN_SRx4_tile.yml'
RELEASE_OPTIONS = Path(__file__).resolve().parent / 'fixtures' / 'release_options'
SCALE = 4
GT_SIZE = 64
BATCH = 2
# RealESRGANDataset always returns 400 px crops; USM sharpening alone costs ~2 s per such batch on
# CPU, so training steps use this corner of each (still > the 21 px kernels after a 0.15x resize).
FEED_SIZE = 96
TINY_HAT = {**TINY_HAT_X2, 'upscale': SCALE}


def _photo(name: str, top: int, left: int, size: tuple) -> np.ndarray:
    """A BGR crop of one of skimage's sample photos (real textures, no downloads)."""
    from skimage import data

    rgb = getattr(data, name)()
    return np.ascontiguousarray(rgb[top : top + size[0], left : left + size[1], ::-1])


@pytest.fixture(scope='module')
def photos(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """HR training photos with a meta_info list (paths relative to the folder), and a folder with
    one low-quality photo whose sides (13 x 19) are not multiples of the window size."""
    root = tmp_path_factory.mktemp('realhat_photos')
    (root / 'hr' / 'sub').mkdir(parents=True)
    names = []
    for index, (name, top, left) in enumerate([('astronaut', 0, 100), ('coffee', 100, 200), ('chelsea', 20, 150)]):
        names.append(f'sub/{name}_{index}.png')
        cv2.imwrite(str(root / 'hr' / names[-1]), _photo(name, top, left, (256, 256)))
    (root / 'meta_info.txt').write_text(''.join(f'{name}\n' for name in names))
    (root / 'lq').mkdir()
    photo = cv2.resize(_photo('chelsea', 60, 180, (52, 76)), (19, 13), interpolation=cv2.INTER_AREA)
    photo = cv2.imdecode(cv2.imencode('.jpg', photo, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], cv2.IMREAD_COLOR)
    cv2.imwrite(str(root / 'lq' / 'cat.png'), photo)
    return {'hr': root / 'hr', 'meta_info': root / 'meta_info.txt', 'lq': root / 'lq'}


def _yml(path: Path) -> Dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _options(yml: Path, photos: Dict[str, Path], root: Path, **top: Any) -> Dict[str, Any]:
    """A shipped train option file as parse_options returns it, with a tiny HAT (and discriminator),
    the test photos, small patches, batch 2 and a pool of 4; `top` overrides top-level keys."""
    opt = _yml(yml)
    opt.update(
        num_gpu=0,
        dist=False,
        rank=0,
        world_size=1,
        is_train=True,
        auto_resume=False,
        gt_size=GT_SIZE,
        queue_size=2 * BATCH,
    )
    opt.update(top)
    opt['network_g'] = copy.deepcopy(TINY_HAT)
    if 'network_d' in opt:
        opt['network_d']['num_feat'] = 8
    opt['datasets']['train'].update(
        dataroot_gt=str(photos['hr']),
        meta_info=str(photos['meta_info']),
        phase='train',
        scale=SCALE,
        gt_size=GT_SIZE,
        batch_size_per_gpu=BATCH,
        num_worker_per_gpu=0,
    )
    opt['datasets']['val'] = {
        'name': 'real_lq',
        'type': 'SingleImageDataset',
        'dataroot_lq': str(photos['lq']),
        'io_backend': {'type': 'disk'},
        'phase': 'val',
        'scale': SCALE,
    }
    opt['val'] = {'save_img': True, 'suffix': None}
    experiment = root / 'experiments' / opt['name']
    opt['path'].update(
        pretrain_network_g=None,
        experiments_root=str(experiment),
        log=str(experiment),
        models=str(experiment / 'models'),
        training_states=str(experiment / 'training_states'),
        visualization=str(experiment / 'visualization'),
    )
    return opt


def _loader(opt: Dict[str, Any], phase: str) -> torch.utils.data.DataLoader:
    dataset_opt = opt['datasets'][phase]
    return build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False, sampler=None, seed=0)


def _batches(opt: Dict[str, Any], size: int = FEED_SIZE) -> Iterator[Dict[str, Any]]:
    """Training batches from RealESRGANDataset (GT plus its random blur/sinc kernels), GT cut to `size`."""
    while True:
        for batch in _loader(opt, 'train'):
            yield {**batch, 'gt': batch['gt'][..., :size, :size].contiguous()}  # as a collated batch is


def _train(model: Any, opt: Dict[str, Any], iterations: int) -> None:
    batches = _batches(opt)
    for step in range(1, iterations + 1):
        model.feed_data(next(batches))
        model.optimize_parameters(step)


def _params(net: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in net.named_parameters()}


def _changed(before: Dict[str, torch.Tensor], net: torch.nn.Module) -> bool:
    return any(not torch.equal(before[name], value) for name, value in net.named_parameters())


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


@pytest.fixture(scope='module')
def mse_run(photos: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """Real-HAT MSE trained 3 steps from its option file, saved as net_g_latest.pth and 3.state."""
    set_random_seed(0)
    root = tmp_path_factory.mktemp('mse_run')
    opt = _options(MSE_YML, photos, root)
    model = build_model(opt)
    before = _params(model.net_g)
    _train(model, opt, 3)
    model.save(0, -1)
    model.save(0, 3)
    return {
        'opt': opt,
        'model': model,
        'before': before,
        'root': root,
        'latest': Path(opt['path']['models']) / 'net_g_latest.pth',
    }


def test_option_files_are_consistent() -> None:
    mse, gan, tile = _yml(MSE_YML), _yml(GAN_YML), _yml(TILE_YML)
    for opt, model_type, iterations in ((mse, 'RealHATMSEModel', 1_000_000), (gan, 'RealHATGANModel', 400_000)):
        train_set = opt['datasets']['train']
        assert opt['model_type'] == model_type and opt['scale'] == SCALE
        assert train_set['type'] == 'RealESRGANDataset'
        assert 'meta_info' in train_set and 'meta_info_file' not in train_set
        assert opt['train']['optim_g']['lr'] == pytest.approx(1e-4)
        assert opt['train']['total_iter'] == iterations
        assert opt['network_g']['embed_dim'] == 180 and opt['network_g']['upscale'] == SCALE
    assert gan['path']['pretrain_network_g'] == f'experiments/{mse["name"]}/models/net_g_latest.pth'
    assert gan['network_d']['type'] == 'UNetDiscriminatorSN'
    assert gan['train']['gan_opt']['loss_weight'] == pytest.approx(0.1)
    assert gan['train']['perceptual_opt']['vgg_type'] == 'vgg19'
    assert tile['path']['pretrain_network_g'] == f'experiments/{gan["name"]}/models/net_g_latest.pth'
    test_set = tile['datasets']['test_1']
    assert test_set['type'] == 'SingleImageDataset' and 'dataroot_gt' not in test_set
    assert set(tile['tile']) == {'tile_size', 'tile_pad'}


def test_degradations_turn_hr_into_real_world_lq(photos: Dict[str, Path], tmp_path: Path) -> None:
    set_random_seed(0)
    opt = _options(MSE_YML, photos, tmp_path)
    model = build_model(opt)
    assert isinstance(model, RealHATMSEModel)
    batch = next(_batches(opt, size=400))  # the dataset's full 400 px output
    assert batch['gt'].shape == (BATCH, 3, 400, 400) and batch['kernel1'].shape == (BATCH, 21, 21)
    model.feed_data(batch)
    assert model.gt.shape == (BATCH, 3, GT_SIZE, GT_SIZE)
    assert model.lq.shape == (BATCH, 3, GT_SIZE // SCALE, GT_SIZE // SCALE)
    assert model.lq.min() >= 0 and model.lq.max() <= 1
    assert torch.allclose(model.lq * 255, (model.lq * 255).round(), atol=1e-4)  # quantised like a saved image
    size = (GT_SIZE // SCALE, GT_SIZE // SCALE)
    bicubic = F.interpolate(model.gt, size=size, mode='bicubic', antialias=True).clamp(0, 1)
    area = F.interpolate(model.gt, size=size, mode='area')
    plain_gap = (bicubic - area).abs().mean().item()
    degradation_gap = (model.lq - bicubic).abs().mean().item()
    assert degradation_gap > 0.02 and degradation_gap > 3 * plain_gap, (degradation_gap, plain_gap)
    assert model.device == torch.device('cpu')
    assert model.jpeger(torch.rand(1, 3, 20, 20), quality=torch.tensor([50.0])).is_contiguous()  # filter2D needs it
    assert {t.device for t in [*model.jpeger.parameters(), model.usm_sharpener.kernel]} == {model.device}


def test_training_pair_pool(photos: Dict[str, Path], tmp_path: Path) -> None:
    set_random_seed(0)
    opt = _options(MSE_YML, photos, tmp_path)
    model = build_model(opt)
    batches = _batches(opt)
    fed = []
    for _ in range(2):
        model.feed_data(next(batches))
        fed.append((model.lq.clone(), model.gt.clone()))
    assert model.queue_ptr == model.queue_size == 2 * BATCH
    assert model.queue_lr.device == model.device and model.queue_lr.shape == (2 * BATCH, 3, 16, 16)
    assert torch.equal(model.queue_lr, torch.cat([lq for lq, _ in fed]))
    assert torch.equal(model.queue_gt, torch.cat([gt for _, gt in fed]))
    pool_lq, pool_gt = model.queue_lr.clone(), model.queue_gt.clone()
    model.feed_data(next(batches))  # pool full: a shuffled batch comes out of it, the new one goes in
    for lq, gt in zip(model.lq, model.gt):
        matches = [index for index in range(len(pool_lq)) if torch.equal(pool_lq[index], lq)]
        assert len(matches) == 1 and torch.equal(pool_gt[matches[0]], gt)  # pairs stay together
    assert sum(any(torch.equal(row, old) for old in pool_lq) for row in model.queue_lr) == BATCH

    bad = build_model(_options(MSE_YML, photos, tmp_path, queue_size=3))
    with pytest.raises(OptionFileError, match='queue_size 3 must be a positive multiple of the batch size'):
        bad.feed_data(next(batches))


def test_mse_training_checkpoint_and_inference(mse_run: Dict[str, Any], photos: Dict[str, Path]) -> None:
    model, opt = mse_run['model'], mse_run['opt']
    assert _changed(mse_run['before'], model.net_g)
    assert set(model.log_dict) == {'l_pix'} and np.isfinite(model.log_dict['l_pix'])

    checkpoint = torch.load(mse_run['latest'], map_location='cpu', weights_only=True)
    assert set(checkpoint) == {'params', 'params_ema'}
    reloaded = build_model(
        {**copy.deepcopy(opt), 'is_train': False, 'path': {**opt['path'], 'pretrain_network_g': str(mse_run['latest'])}}
    )
    assert _same_weights(reloaded.net_g, model.net_g_ema)  # param_key_g: params_ema from the option file
    state = torch.load(Path(opt['path']['training_states']) / '3.state', map_location='cpu', weights_only=True)
    assert state['iter'] == 3
    model.resume_training(state)

    model.validation(_loader(opt, 'val'), 3, None, save_img=True)
    assert model.is_train  # the synthetic pipeline is back on after validation
    result = cv2.imread(str(Path(opt['path']['visualization']) / 'cat' / 'cat_3.png'))
    assert result.shape == (13 * SCALE, 19 * SCALE, 3) and result.std() > 5


def test_gan_fine_tunes_mse_weights_and_trains_discriminator(
    mse_run: Dict[str, Any], photos: Dict[str, Path], tmp_path: Path
) -> None:
    set_random_seed(0)
    opt = _options(GAN_YML, photos, tmp_path)
    del opt['train']['perceptual_opt']
    opt['path']['pretrain_network_g'] = str(mse_run['latest'])
    model = build_model(opt)
    assert isinstance(model, RealHATGANModel) and type(model.net_d).__name__ == 'UNetDiscriminatorSN'
    assert _same_weights(model.net_g, mse_run['model'].net_g_ema)
    assert model.cri_perceptual is None
    g_before, d_before = _params(model.net_g), _params(model.net_d)
    _train(model, opt, 3)
    assert _changed(g_before, model.net_g) and _changed(d_before, model.net_d)
    assert set(model.log_dict) == {'l_g_pix', 'l_g_gan', 'l_d_real', 'l_d_fake', 'out_d_real', 'out_d_fake'}
    assert all(np.isfinite(value) for value in model.log_dict.values())
    assert model.gt_usm.shape == model.gt.shape and not torch.equal(model.gt_usm, model.gt)

    model.save(0, -1)
    models = Path(opt['path']['models'])
    model.save(0, 3)  # a numbered save holds net_g (+ EMA), net_d and both Adam states: the plan counts them
    written = sum(path.stat().st_size for path in (models / 'net_g_3.pth', models / 'net_d_3.pth'))
    written += (Path(opt['path']['training_states']) / '3.state').stat().st_size
    unvalidated = {key: value for key, value in opt.items() if key != 'val'}
    planned = make_plan(unvalidated, world_size=1, experiments_dir=str(tmp_path), num_gpu=0).bytes_per_save
    assert abs(planned / written - 1) < 0.15, (planned, written)
    reload_opt = copy.deepcopy(opt)
    reload_opt['path'].update(
        pretrain_network_g=str(models / 'net_g_latest.pth'),
        param_key_g='params',
        pretrain_network_d=str(models / 'net_d_latest.pth'),
    )
    reloaded = build_model(reload_opt)
    assert _same_weights(reloaded.net_g, model.net_g) and _same_weights(reloaded.net_d, model.net_d)
    assert _same_weights(reloaded.net_g_ema, model.net_g_ema)


def _write_random_vgg19(path: Path) -> None:
    """torchvision's VGG19 layout with random conv weights; biases and the classifier (which the
    feature extractor drops) are stored as one broadcast value each, so the file stays ~80 MB."""
    with torch.device('meta'):
        shapes = {key: value.shape for key, value in vgg19().state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.startswith('features.') and key.endswith('.weight'):
            state[key] = torch.randn(shape, generator=generator) * (2 / shape[1:].numel()) ** 0.5
        else:
            state[key] = torch.zeros(1).expand(shape)
    torch.save(state, path)


@pytest.mark.filterwarnings('ignore:.*(pretrained|weight enum).*:UserWarning')  # BasicSR's torchvision call
def test_perceptual_loss_uses_local_vgg19(
    photos: Dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / 'vgg19-dcbb9e9d.pth'
    _write_random_vgg19(weights)
    monkeypatch.setattr(vgg_arch, 'VGG_PRETRAIN_PATH', str(weights))
    set_random_seed(0)
    opt = _options(GAN_YML, photos, tmp_path)
    model = build_model(opt)
    first_conv = model.cri_perceptual.vgg.vgg_net.conv1_1.weight
    assert torch.equal(first_conv, torch.load(weights, weights_only=True)['features.0.weight'])
    _train(model, opt, 1)
    assert model.log_dict['l_g_percep'] > 0 and np.isfinite(model.log_dict['l_g_percep'])
    assert 'l_g_style' not in model.log_dict  # style_weight 0


def test_missing_vgg19_weights_error(photos: Dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = 'experiments/pretrained_models/vgg19-dcbb9e9d.pth'
    assert vgg_arch.VGG_PRETRAIN_PATH == expected  # the path the docs and the error name
    monkeypatch.chdir(tmp_path)  # no experiments/ here
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # nor a torchvision cache
    with pytest.raises(MissingVGGWeightsError) as error:
        build_model(_options(GAN_YML, photos, tmp_path))
    assert isinstance(error.value, FileNotFoundError)  # the train CLI prints it without a traceback
    message = str(error.value)
    assert expected in message and vgg_weights_url('vgg19') in message and str(tmp_path / expected) in message
    assert vgg_weights_url('vgg19').endswith('/vgg19-dcbb9e9d.pth')


def test_missing_degradation_options_are_named(photos: Dict[str, Path], tmp_path: Path) -> None:
    opt = _options(GAN_YML, photos, tmp_path)
    del opt['train']['perceptual_opt'], opt['gan_gt_usm'], opt['jpeg_range2']
    with pytest.raises(OptionFileError, match=r"\['jpeg_range2', 'gan_gt_usm'\]"):
        build_model(opt)


def test_tiled_inference_on_real_photo(
    mse_run: Dict[str, Any], photos: Dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opt = _yml(TILE_YML)
    opt['network_g'] = copy.deepcopy(TINY_HAT)
    opt['tile'] = {'tile_size': 8, 'tile_pad': 4}  # 2 x 3 tiles over the 13 x 19 photo
    opt['datasets']['test_1']['dataroot_lq'] = str(photos['lq'])
    opt['path']['pretrain_network_g'] = str(mse_run['latest'])
    yml = tmp_path / 'tile.yml'
    yml.write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    run_test_cli(['-opt', str(yml)])
    result = cv2.imread(
        str(tmp_path / 'results' / opt['name'] / 'visualization' / 'real_photos' / f'cat_{opt["name"]}.png')
    )
    assert result is not None and result.shape == (13 * SCALE, 19 * SCALE, 3)
    mse_run['model'].validation(_loader(mse_run['opt'], 'val'), 'whole', None, save_img=True)
    whole = cv2.imread(str(Path(mse_run['opt']['path']['visualization']) / 'cat' / 'cat_whole.png'))
    assert np.abs(result.astype(float) - whole.astype(float)).mean() < 8  # tiles blend into the same picture


@pytest.mark.parametrize('model_class', [HATModel, RealHATMSEModel, RealHATGANModel])
def test_hat_behaviour_comes_first_and_basicsr_models_chain_inside_it(model_class: type) -> None:
    """HATModelMixin (with BasicSRFixesMixin) precedes every BasicSR class, so no BasicSR method
    (SRGANModel's save, RealESRGANModel's step) shadows theirs; the registered classes add nothing
    to the step, the training set-up or the save."""
    mro = model_class.__mro__
    assert mro[1:3] == (HATModelMixin, BasicSRFixesMixin)
    basicsr_classes = [cls for cls in mro if cls.__module__.startswith('basicsr.')]
    assert basicsr_classes and mro.index(basicsr_classes[0]) > mro.index(BasicSRFixesMixin)
    if model_class is not HATModel:
        assert mro.index(RealDegradationMixin) + 1 == mro.index(basicsr_classes[0])
    assert not {'optimize_parameters', 'init_training_settings', 'save', 'test'} & set(vars(model_class))


def test_gan_applies_acceleration_to_the_generator_and_its_ema_only(photos: Dict[str, Path], tmp_path: Path) -> None:
    set_random_seed(0)
    opt = _options(
        GAN_YML, photos, tmp_path, acceleration={'attn_impl': 'reference', 'use_checkpoint': True, 'bf16': True}
    )
    del opt['train']['perceptual_opt']
    model = build_model(opt)  # the discriminator has no attention to switch
    assert model.net_g.attn_impl == model.net_g_ema.attn_impl == 'reference'
    assert model.net_g_ema.grad_checkpointing and not hasattr(model.net_d, 'attn_impl')
    autocast_seen = []
    model.net_g.register_forward_hook(lambda *_: autocast_seen.append(torch.is_autocast_enabled('cpu')))
    _train(model, opt, 1)
    assert autocast_seen == [True]  # bf16 reaches the generator's training forward
    assert all(np.isfinite(value) for value in model.log_dict.values())

    with torch.no_grad():
        model.net_g.conv_last.bias.fill_(float('nan'))
    model.feed_data(next(_batches(opt)))
    with pytest.raises(NonFiniteTrainingError, match=r'training diverged at iteration 2: l_g_pix = nan'):
        model.optimize_parameters(2)


def test_gan_keeps_only_the_newest_checkpoints_with_both_networks(photos: Dict[str, Path], tmp_path: Path) -> None:
    """SRGANModel's save does not chain to super(); with HATModelMixin first, logger.keep_checkpoints
    still prunes after it, deleting net_d_<iter>.pth with net_g_<iter>.pth and <iter>.state."""
    opt = _options(GAN_YML, photos, tmp_path)
    del opt['train']['perceptual_opt']
    opt['logger']['keep_checkpoints'] = 2
    model = build_model(opt)
    models, states = Path(opt['path']['models']), Path(opt['path']['training_states'])
    model.save(0, -1)
    for iteration in (1, 2, 3):
        model.save(0, iteration)
    assert sorted(path.name for path in models.iterdir()) == [
        'net_d_2.pth',
        'net_d_3.pth',
        'net_d_latest.pth',
        'net_g_2.pth',
        'net_g_3.pth',
        'net_g_latest.pth',
    ]
    assert sorted(path.name for path in states.iterdir()) == ['2.state', '3.state']
    assert len(torch.load(states / '3.state', weights_only=True)['optimizers']) == 2  # net_g's and net_d's


def test_gan_without_its_discriminator_options_is_refused(photos: Dict[str, Path], tmp_path: Path) -> None:
    opt = _options(GAN_YML, photos, tmp_path)
    del opt['train']['gan_opt'], opt['train']['optim_d']
    with pytest.raises(OptionFileError, match=r"train option\(s\) \['optim_d', 'gan_opt'\]"):
        build_model(opt)


def test_perceptual_loss_of_another_vgg_needs_its_own_weights(
    photos: Dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no experiments/pretrained_models/vgg19 here
    torch_home = tmp_path / 'torch_home'
    (torch_home / 'hub' / 'checkpoints').mkdir(parents=True)
    (torch_home / 'hub' / 'checkpoints' / 'vgg19-dcbb9e9d.pth').write_bytes(b'only vgg19 is cached')
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    opt = _options(GAN_YML, photos, tmp_path)
    opt['train']['perceptual_opt'].update(vgg_type='vgg16', layer_weights={'conv5_3': 1.0})
    with pytest.raises(MissingVGGWeightsError, match=r'ImageNet vgg16 weights.*vgg16-397923af\.pth'):
        build_model(opt)


def _release_copy(name: str, photos: Dict[str, Path], folder: Path) -> Path:
    """A copy of a release option file with only what data and time demand changed: the data paths,
    patch size, batch, iterations and workers."""
    opt = _yml(RELEASE_OPTIONS / name)
    train_set = opt['datasets']['train']
    train_set.update(
        dataroot_gt=str(photos['hr']),
        meta_info_file=str(photos['meta_info']),
        gt_size=GT_SIZE,
        batch_size_per_gpu=1,
        num_worker_per_gpu=0,
    )
    opt['gt_size'] = GT_SIZE
    opt['train']['total_iter'] = 1
    copy_path = folder / name
    copy_path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return copy_path


def test_the_release_realhat_option_files_run(photos: Dict[str, Path], tmp_path: Path) -> None:
    """The release's Real-HAT files (list in meta_info_file, full-size HAT): the MSE file trains an
    iteration; the GAN file stops at the weights file this machine lacks, naming it in one line."""
    mse = _release_copy('train_Real_HAT_SRx4_mse_model.yml', photos, tmp_path)
    run_python(['-m', 'hat_basicsr.train', '-opt', str(mse)], cwd=tmp_path)
    experiment = tmp_path / 'experiments' / 'train_Real_HAT_mse_model'
    log = read_log(experiment, 'train_train_Real_HAT_mse_model')
    assert 'Start training from epoch: 0, iter: 0' in log and 'End of training' in log
    assert (experiment / 'models' / 'net_g_latest.pth').is_file()

    # As published, the GAN file starts from the MSE stage's weights under a name of the release's.
    gan = _release_copy('train_Real_HAT_GAN_SRx4_finetune_from_mse_model.yml', photos, tmp_path)
    proc = run_python(['-m', 'hat_basicsr.train', '-opt', str(gan)], cwd=tmp_path, check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        'hat_basicsr.train: error: CheckpointError: checkpoint not found: experiments/pretrained_models/Real_HAT_x4.pth'
    )


@pytest.mark.parametrize('listed_by', ['meta_info', 'meta_info_file', 'a scan of dataroot_gt'])
def test_realesrgan_dataset_reads_either_list_key_or_scans_the_folder(photos: Dict[str, Path], listed_by: str) -> None:
    """BasicSR's RealESRGANDataset needs `meta_info`; the release's names its list meta_info_file and
    scans dataroot_gt (here with subfolders) without one."""
    dataset_opt = _yml(MSE_YML)['datasets']['train']
    del dataset_opt['meta_info']
    if listed_by != 'a scan of dataroot_gt':
        dataset_opt[listed_by] = str(photos['meta_info'])
    dataset = build_dataset({**dataset_opt, 'dataroot_gt': str(photos['hr']), 'phase': 'train', 'scale': SCALE})
    listed = [photos['hr'] / line for line in photos['meta_info'].read_text().split()]
    assert sorted(map(Path, dataset.paths)) == sorted(listed)
    assert dataset[0]['gt'].shape == (3, 400, 400)
