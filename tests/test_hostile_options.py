"""Hostile option files and data end with one line naming the option path (or file), the value and
what is expected; the release's own option layouts start; the project's unexpected errors keep their
traceback. Most cases call the checks in-process (what `run_pipeline` runs before BasicSR); a few
run `python -m hat_basicsr.train` to prove the entry point."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import yaml

from hat_basicsr.errors import OptionFileError
from hat_basicsr.option_check import check_data, check_options, precheck_option_file
from hat_basicsr.train import main as train_main
from hat_basicsr.train import run_pipeline
from hat_basicsr.utils.user_errors import user_error_message

from helpers import SCALE, TINY_HAT, run_python, train_options, val_dataset, write_options

PROG = 'hat_basicsr.train'


def refusal(opt: Any, is_train: bool = True) -> str:
    """The one-line message the up-front checks refuse `opt` with."""
    with pytest.raises(OptionFileError) as error:
        check_options(opt, 'x.yml', is_train)
        check_data(opt, 'x.yml')
    message = str(error.value)
    assert '\n' not in message and message.startswith('x.yml: ')
    return message


def edited(data: Dict[str, Path], edit: Callable[[Dict], Any]) -> Dict:
    opt = train_options(data, 'hostile')
    edit(opt)
    return opt


def train_set(opt: Dict) -> Dict:
    return opt['datasets']['train']


def scheduler(opt: Dict) -> Dict:
    return opt['train']['scheduler']


# (option path, bad value, how to set it): each is refused naming the path and the value.
BAD_VALUES = [
    ('datasets.train.gt_size', 0, lambda o, v: train_set(o).update(gt_size=v)),
    ('datasets.train.gt_size', -64, lambda o, v: train_set(o).update(gt_size=v)),
    ('datasets.train.gt_size', 33, lambda o, v: train_set(o).update(gt_size=v)),
    ('datasets.train.gt_size', '32', lambda o, v: train_set(o).update(gt_size=v)),
    ('gt_size', 30.5, lambda o, v: o.update(gt_size=v)),
    ('val.val_freq', 0, lambda o, v: o['val'].update(val_freq=v)),
    ('logger.save_checkpoint_freq', 0, lambda o, v: o['logger'].update(save_checkpoint_freq=v)),
    ('logger.print_freq', 0, lambda o, v: o['logger'].update(print_freq=v)),
    ('logger.keep_checkpoints', 0, lambda o, v: o['logger'].update(keep_checkpoints=v)),
    ('logger.keep_checkpoints', 'all', lambda o, v: o['logger'].update(keep_checkpoints=v)),
    ('val.tb_images', -1, lambda o, v: o['val'].update(tb_images=v)),
    ('val.tb_images', 'few', lambda o, v: o['val'].update(tb_images=v)),
    ('logger.print_freq', 1.5, lambda o, v: o['logger'].update(print_freq=v)),
    ('train.total_iter', 'many', lambda o, v: o['train'].update(total_iter=v)),
    ('datasets.train.batch_size_per_gpu', 0, lambda o, v: train_set(o).update(batch_size_per_gpu=v)),
    ('datasets.train.num_worker_per_gpu', -1, lambda o, v: train_set(o).update(num_worker_per_gpu=v)),
    ('datasets.train.use_hflip', 'yes please', lambda o, v: train_set(o).update(use_hflip=v)),
    ('datasets.train.prefetch_mode', 'gpu', lambda o, v: train_set(o).update(prefetch_mode=v)),
    ('train.optim_g.lr', 'fast', lambda o, v: o['train']['optim_g'].update(lr=v)),
    ('train.optim_g.lr', 0, lambda o, v: o['train']['optim_g'].update(lr=v)),
    ('train.optim_g.weight_decay', '0', lambda o, v: o['train']['optim_g'].update(weight_decay=v)),
    ('train.optim_g.betas', [0.9], lambda o, v: o['train']['optim_g'].update(betas=v)),
    ('train.optim_g.type', 'SGD', lambda o, v: o['train']['optim_g'].update(type=v)),
    ('num_gpu', 'two', lambda o, v: o.update(num_gpu=v)),
    ('num_gpu', -1, lambda o, v: o.update(num_gpu=v)),
    ('scale', '2', lambda o, v: o.update(scale=v)),
    ('train.ema_decay', 2, lambda o, v: o['train'].update(ema_decay=v)),
    ('train.ema_decay', -0.5, lambda o, v: o['train'].update(ema_decay=v)),
    ('train.ema_decay', 'slow', lambda o, v: o['train'].update(ema_decay=v)),
    ('train.scheduler.milestones', 'soon', lambda o, v: scheduler(o).update(milestones=v)),
    ('train.scheduler.milestones', [2, 'later'], lambda o, v: scheduler(o).update(milestones=v)),
    ('train.scheduler.gamma', 'half', lambda o, v: scheduler(o).update(gamma=v)),
    ('train.scheduler.gamma', 0, lambda o, v: scheduler(o).update(gamma=v)),
    ('train.scheduler.restart_weights', 'x', lambda o, v: scheduler(o).update(restart_weights=v)),
    ('train.scheduler.restart_weights', [1, 0.5], lambda o, v: scheduler(o).update(restart_weights=v)),
    ('train.scheduler.type', 'StepLR', lambda o, v: scheduler(o).update(type=v)),
    (
        'train.scheduler.periods',
        'all',
        lambda o, v: o['train'].update(
            scheduler={'type': 'CosineAnnealingRestartLR', 'periods': v, 'restart_weights': [1]}
        ),
    ),
    ('train.pixel_opt.loss_weight', 'one', lambda o, v: o['train']['pixel_opt'].update(loss_weight=v)),
    ('train.pixel_opt.type', 'L3Loss', lambda o, v: o['train']['pixel_opt'].update(type=v)),
    ('val.metrics.psnr.type', 'psnr', lambda o, v: o['val']['metrics']['psnr'].update(type=v)),
    ('val.metrics.psnr.crop_border', -2, lambda o, v: o['val']['metrics']['psnr'].update(crop_border=v)),
    ('val.save_img', 'no', lambda o, v: o['val'].update(save_img=v)),
    ('model_type', 'HATModle', lambda o, v: o.update(model_type=v)),
    ('network_g.type', 'HATX', lambda o, v: o['network_g'].update(type=v)),
    ('datasets.train.type', 'PairedImageDatset', lambda o, v: train_set(o).update(type=v)),
    ('datasets.train.io_backend.type', 'hdd', lambda o, v: train_set(o).update(io_backend={'type': v})),
    ('datasets.training', 'training', lambda o, v: o['datasets'].update({v: dict(o['datasets']['val'])})),
    ('datasets.train.dataroot_gt', 42, lambda o, v: train_set(o).update(dataroot_gt=v)),
    ('train', 'none', lambda o, v: o.update(train=v)),
]


@pytest.mark.parametrize('path, value, edit', BAD_VALUES, ids=[f'{path}={value!r}' for path, value, _ in BAD_VALUES])
def test_a_bad_value_is_refused_naming_its_path_and_value(sr_data, path, value, edit):
    message = refusal(edited(sr_data, lambda opt: edit(opt, value)))
    assert f'x.yml: {path}: got {value!r}, expected ' in message


def test_the_expectations_say_what_is_needed(sr_data):
    assert refusal(edited(sr_data, lambda o: train_set(o).update(gt_size=33))).endswith(
        'expected a positive integer multiple of scale 2 (the GT patch size)'
    )
    assert 'expected a number in (0, 1]' in refusal(edited(sr_data, lambda o: o['train'].update(ema_decay=2.0)))
    assert 'a list of integers >= 0 (iterations)' in refusal(
        edited(sr_data, lambda o: scheduler(o).update(milestones='soon'))
    )
    assert "did you mean 'HAT'?" in refusal(edited(sr_data, lambda o: o['network_g'].update(type='HATX')))


@pytest.mark.parametrize('decay', [0, 0.5, 0.999, 1])
def test_ema_decay_in_range_or_off_is_accepted(sr_data, decay):
    opt = edited(sr_data, lambda o: o['train'].update(ema_decay=decay))
    assert check_options(opt, 'x.yml', is_train=True) == []


@pytest.mark.parametrize(
    'path, edit',
    [
        ('datasets.train.dataroot_gt', lambda o: train_set(o).pop('dataroot_gt')),
        ('datasets.train.dataroot_lq', lambda o: train_set(o).pop('dataroot_lq')),
        ('datasets.train.gt_size', lambda o: train_set(o).pop('gt_size')),
        ('datasets.train.use_rot', lambda o: train_set(o).pop('use_rot')),
        ('datasets.train.io_backend', lambda o: train_set(o).pop('io_backend')),
        ('datasets.val.name', lambda o: o['datasets']['val'].pop('name')),
        ('datasets.train', lambda o: o['datasets'].pop('train')),
        ('train.optim_g.lr', lambda o: o['train']['optim_g'].pop('lr')),
        ('train.scheduler.milestones', lambda o: scheduler(o).pop('milestones')),
        ('train.scheduler', lambda o: o['train'].pop('scheduler')),
        ('val.val_freq', lambda o: o['val'].pop('val_freq')),
        ('logger.save_checkpoint_freq', lambda o: o['logger'].pop('save_checkpoint_freq')),
        ('logger', lambda o: o.pop('logger')),
        ('num_gpu', lambda o: o.pop('num_gpu')),
        ('network_g', lambda o: o.pop('network_g')),
    ],
)
def test_a_missing_key_is_named(sr_data, path, edit):
    assert f'x.yml: {path} is missing; ' in refusal(edited(sr_data, edit))


def test_an_unknown_scheduler_or_optimizer_option_is_named_with_the_likely_spelling(sr_data):
    opt = edited(sr_data, lambda o: scheduler(o).update(gama=scheduler(o).pop('gamma')))
    assert "train.scheduler.gama is not an option of MultiStepLR (did you mean 'gamma'?)" in refusal(opt)
    opt = edited(sr_data, lambda o: o['train']['optim_g'].update(betaz=[0.9, 0.99]))
    assert "train.optim_g.betaz is not an option of Adam (did you mean 'betas'?)" in refusal(opt)


@pytest.mark.parametrize(
    'content, holds', [('', 'nothing'), ('[1, 2]\n', "'list'"), ('just text\n', "'str'"), ('{}\n', 'nothing')]
)
def test_an_empty_or_non_mapping_option_file_is_refused(tmp_path, content, holds):
    options = tmp_path / 'opt.yml'
    options.write_text(content)
    with pytest.raises(OptionFileError, match=f'opt.yml: the option file holds {holds}; expected a mapping'):
        precheck_option_file(['-opt', str(options)], PROG, is_train=True)


def test_a_missing_or_invalid_option_file_is_refused_in_one_line(tmp_path):
    with pytest.raises(OptionFileError, match=r'cannot read option file .*nowhere.yml: No such file'):
        precheck_option_file(['-opt', str(tmp_path / 'nowhere.yml')], PROG, is_train=True)
    broken = tmp_path / 'broken.yml'
    broken.write_text('name: x\ndatasets: [unclosed\n')
    with pytest.raises(
        OptionFileError,
        match=r"broken.yml:3:1: invalid YAML: expected ',' or '\]', but got '<stream end>' .*started at line 2",
    ) as error:
        precheck_option_file(['-opt', str(broken)], PROG, is_train=True)
    assert '\n' not in str(error.value)


def test_force_yml_values_are_checked_too(sr_data, tmp_path):
    options = write_options(tmp_path / 'opt.yml', train_options(sr_data, 'forced'))
    precheck_option_file(['-opt', str(options), '--force_yml', 'train:ema_decay=0.5'], PROG, is_train=True)
    with pytest.raises(OptionFileError, match=r'train.ema_decay: got 2, expected'):
        precheck_option_file(['-opt', str(options), '--force_yml', 'train:ema_decay=2', '--auto_resume'], PROG, True)
    with pytest.raises(OptionFileError, match='has no option trian'):
        precheck_option_file(['-opt', str(options), '--force_yml', 'trian:ema_decay=0.5'], PROG, is_train=True)


@pytest.mark.parametrize('key', ['dataroot_gt', 'dataroot_lq'])
def test_an_empty_or_missing_dataset_folder_is_named(sr_data, tmp_path, key):
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    opt = edited(sr_data, lambda o: train_set(o).update({key: str(tmp_path / 'empty')}))
    assert refusal(opt).endswith(
        f"datasets.train.{key}: got '{tmp_path / 'empty'}', expected a folder with images "
        '(.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp, .ppm); it has none'
    )
    opt = edited(sr_data, lambda o: o['datasets']['val'].update({key: str(tmp_path / 'nowhere')}))
    assert f"datasets.val.{key}: got '{tmp_path / 'nowhere'}', expected an existing folder" in refusal(opt)


def test_an_empty_list_file_or_lmdb_is_named(sr_data, tmp_path):
    empty_list = tmp_path / 'meta_info.txt'
    empty_list.write_text('\n')
    opt = edited(sr_data, lambda o: train_set(o).update(meta_info_file=str(empty_list)))
    assert 'datasets.train.meta_info_file' in refusal(opt) and 'it is empty' in refusal(opt)
    opt = edited(sr_data, lambda o: train_set(o).update(meta_info_file=str(tmp_path / 'none.txt')))
    assert 'expected an existing list file' in refusal(opt)
    lmdb = tmp_path / 'HR.lmdb'
    shutil.copytree(sr_data['train_hr_lmdb'], lmdb)
    (lmdb / 'meta_info.txt').write_text('')
    lmdbs = {'dataroot_gt': str(lmdb), 'dataroot_lq': str(sr_data['train_lr_lmdb']), 'io_backend': {'type': 'lmdb'}}
    opt = edited(sr_data, lambda o: train_set(o).update(lmdbs))
    assert refusal(opt).endswith(
        f"datasets.train.dataroot_gt: got '{lmdb}', expected an LMDB with at least one key; its meta_info.txt is empty"
    )
    opt = edited(sr_data, lambda o: train_set(o).update(io_backend={'type': 'lmdb'}))
    assert 'datasets.train.dataroot_gt' in refusal(opt) and 'whose name ends with .lmdb' in refusal(opt)


def realesrgan_dataset(data: Dict[str, Path]) -> Dict:
    """RealESRGANDataset options with the keys of the release's Real-HAT files."""
    kernels = ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']
    blur = {
        'kernel_list': kernels,
        'kernel_prob': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
        'sinc_prob': 0.1,
        'betag_range': [0.5, 4],
        'betap_range': [1, 2],
    }
    return {
        'name': 'DF2K+OST',
        'type': 'RealESRGANDataset',
        'dataroot_gt': str(data['train_hr']),
        'meta_info_file': str(data['meta_info']),
        'io_backend': {'type': 'disk'},
        'blur_kernel_size': 21,
        **blur,
        'blur_sigma': [0.2, 3],
        'blur_kernel_size2': 21,
        **{f'{key}2': value for key, value in blur.items()},
        'blur_sigma2': [0.2, 1.5],
        'final_sinc_prob': 0.8,
        'gt_size': 256,
        'use_hflip': True,
        'use_rot': False,
        'use_shuffle': True,
        'num_worker_per_gpu': 5,
        'batch_size_per_gpu': 4,
        'dataset_enlarge_ratio': 1,
        'prefetch_mode': None,
    }


def release_common(opt: Dict) -> Dict:
    """The sections every release training file has besides datasets and network (tiny network)."""
    opt.update(
        num_gpu='auto',
        manual_seed=0,
        network_g={**TINY_HAT},
        path={'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        logger={
            'print_freq': 100,
            'save_checkpoint_freq': 1e4,
            'use_tb_logger': True,
            'wandb': {'project': None, 'resume_id': None},
        },
        dist_params={'backend': 'nccl', 'port': 29500},
    )
    opt['train'] = {
        'ema_decay': 0.999,
        'optim_g': {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
        'scheduler': {'type': 'MultiStepLR', 'milestones': [300000, 500000, 650000], 'gamma': 0.5},
        'total_iter': 800000,
        'warmup_iter': -1,
        'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
    }
    return opt


def release_val(data: Dict[str, Path], names=('val_1', 'val_2')) -> Dict:
    return {key: {k: v for k, v in val_dataset(data).items() if k not in ('phase', 'scale')} for key in names}


def release_metrics(val_freq: float) -> Dict:
    return {
        'val_freq': val_freq,
        'save_img': False,
        'pbar': False,
        'metrics': {
            name: {'type': f'calculate_{name}', 'crop_border': SCALE, 'test_y_channel': True, 'better': 'higher'}
            for name in ('psnr', 'ssim')
        },
    }


def release_imagenet(data: Dict[str, Path]) -> Dict:
    """The keys of the release's train_HAT*_SRx*_ImageNet_from_scratch.yml (meta_info_file, and
    dataroot_lq equal to dataroot_gt), on the tiny data."""
    train = {
        'name': 'ImageNet',
        'type': 'ImageNetPairedDataset',
        'dataroot_gt': str(data['train_hr']),
        'dataroot_lq': str(data['train_hr']),
        'meta_info_file': str(data['meta_info']),
        'io_backend': {'type': 'disk'},
        'gt_size': 32,
        'use_hflip': True,
        'use_rot': True,
        'use_shuffle': True,
        'num_worker_per_gpu': 0,
        'batch_size_per_gpu': 2,
        'dataset_enlarge_ratio': 1,
        'prefetch_mode': None,
    }
    opt = release_common({'name': 'release_imagenet', 'model_type': 'HATModel', 'scale': SCALE})
    opt['datasets'] = {'train': train, **release_val(data)}
    opt['val'] = release_metrics(1e4)
    return opt


def release_df2k(data: Dict[str, Path]) -> Dict:
    """The keys of the release's DF2K files (from scratch, x4 from x2, fine-tune after ImageNet)."""
    opt = release_imagenet(data)
    opt['datasets'] = {
        'train': {
            **opt['datasets']['train'],
            'name': 'DF2K',
            'type': 'PairedImageDataset',
            'dataroot_lq': str(data['train_lr']),
        },
        **release_val(data, ('val', 'val_2', 'val_3')),
    }
    opt['path'].update(param_key_g='params_ema')
    return opt


def release_realhat(data: Dict[str, Path], gan: bool) -> Dict:
    """The keys of the release's train_Real_HAT_SRx4_mse_model.yml / ..._GAN_..._finetune_from_mse_model.yml."""
    opt = release_common(
        {
            'name': 'release_realhat',
            'model_type': 'RealHATGANModel' if gan else 'RealHATMSEModel',
            'scale': SCALE,
            'gt_size': 256,
            'queue_size': 180,
            'resize_prob': [0.2, 0.7, 0.1],
            'resize_range': [0.15, 1.5],
            'gaussian_noise_prob': 0.5,
            'noise_range': [1, 30],
            'poisson_scale_range': [0.05, 3],
            'gray_noise_prob': 0.4,
            'jpeg_range': [30, 95],
            'second_blur_prob': 0.8,
            'resize_prob2': [0.3, 0.4, 0.3],
            'resize_range2': [0.3, 1.2],
            'gaussian_noise_prob2': 0.5,
            'noise_range2': [1, 25],
            'poisson_scale_range2': [0.05, 2.5],
            'gray_noise_prob2': 0.4,
            'jpeg_range2': [30, 95],
        }
    )
    opt['datasets'] = {'train': realesrgan_dataset(data)}
    opt['train']['optim_d'] = dict(opt['train']['optim_g'])
    if not gan:
        opt.update(gt_usm=True)
    if gan:
        opt.update(
            l1_gt_usm=True,
            percep_gt_usm=True,
            gan_gt_usm=False,
            network_d={'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 64, 'skip_connection': True},
        )
        opt['train'].update(
            perceptual_opt={
                'type': 'PerceptualLoss',
                'layer_weights': {'conv1_2': 0.1, 'conv5_4': 1},
                'vgg_type': 'vgg19',
                'use_input_norm': True,
                'perceptual_weight': 1.0,
                'style_weight': 0,
                'range_norm': False,
                'criterion': 'l1',
            },
            gan_opt={
                'type': 'GANLoss',
                'gan_type': 'vanilla',
                'real_label_val': 1.0,
                'fake_label_val': 0.0,
                'loss_weight': 0.1,
            },
            net_d_iters=1,
            net_d_init_iters=0,
        )
    return opt


@pytest.mark.parametrize('layout', [release_imagenet, release_df2k], ids=['ImageNet', 'DF2K'])
def test_the_release_layouts_pass_the_checks_given_data(sr_data, layout):
    opt = layout(sr_data)
    assert check_options(opt, 'x.yml', is_train=True) == []
    check_data(opt, 'x.yml')


@pytest.mark.parametrize('gan', [False, True], ids=['MSE', 'GAN'])
def test_the_release_realhat_files_pass_with_meta_info_file_or_no_list(sr_data, gan):
    """The release names RealESRGANDataset's list meta_info_file and its dataset scans dataroot_gt
    without one; both are accepted (basicsr_compat reads them), an empty folder is refused."""
    opt = release_realhat(sr_data, gan)
    assert 'meta_info_file' in train_set(opt) and 'meta_info' not in train_set(opt)
    assert check_options(opt, 'x.yml', is_train=True) == []
    check_data(opt, 'x.yml')
    del train_set(opt)['meta_info_file']
    check_data(opt, 'x.yml')
    train_set(opt)['dataroot_gt'] = str(sr_data['root'])  # holds only subfolders of images: scanned too
    check_data(opt, 'x.yml')


@pytest.mark.parametrize(
    'gan, edit, refusal',
    [
        (
            False,
            lambda o: o.update(resize_prob=[0.2, 0.8]),
            'resize_prob: got [0.2, 0.8], expected a list of 3 numbers',
        ),
        (False, lambda o: o.update(gray_noise_prob2=1.5), 'gray_noise_prob2: got 1.5, expected a number >= 0 and <= 1'),
        (False, lambda o: o.update(jpeg_range='30-95'), "jpeg_range: got '30-95', expected a list of 2 numbers"),
        (False, lambda o: o.pop('noise_range2'), 'noise_range2 is missing; RealHATMSEModel needs it'),
        (False, lambda o: o.pop('gt_usm'), 'gt_usm is missing; RealHATMSEModel needs it'),
        (True, lambda o: o.update(gan_gt_usm='no'), "gan_gt_usm: got 'no', expected true or false"),
        (True, lambda o: o.update(queue_size=0), 'queue_size: got 0, expected an integer >= 1'),
    ],
)
def test_the_realhat_degradation_options_are_checked_as_declared(sr_data, gan, edit, refusal):
    opt = release_realhat(sr_data, gan)
    edit(opt)
    assert refusal in check_refusal(opt)
    opt['high_order_degradation'] = False  # the models read them only to synthesise pairs
    assert check_options(opt, 'x.yml', is_train=True) == []


@pytest.mark.parametrize(
    'edit, refusal',
    [
        (lambda d: d.update(use_rot='yes'), "datasets.train.use_rot: got 'yes', expected true or false"),
        (lambda d: d.update(meta_info=['a.txt']), "datasets.train.meta_info: got ['a.txt'], expected a string or"),
        (lambda d: d.update(skip_corrupt=1), 'datasets.train.skip_corrupt: got 1, expected true or false'),
        (lambda d: d.pop('gt_size'), 'datasets.train.gt_size is missing; ImageNetPairedDataset needs it in training'),
        (lambda d: d.pop('dataroot_gt'), 'datasets.train.dataroot_gt is missing; ImageNetPairedDataset needs it'),
    ],
)
def test_the_imagenet_dataset_options_are_checked_as_declared(sr_data, edit, refusal):
    opt = release_imagenet(sr_data)
    assert train_set(opt)['type'] == 'ImageNetPairedDataset'
    edit(train_set(opt))
    assert refusal in check_refusal(opt)


def check_refusal(opt: Dict) -> str:
    with pytest.raises(OptionFileError) as error:
        check_options(opt, 'x.yml', is_train=True)
    return str(error.value)


def test_a_release_imagenet_layout_trains_through_the_entry_point(sr_data, tmp_path):
    opt = release_imagenet(sr_data)
    opt['train'].update(total_iter=2)
    opt['val']['val_freq'] = 2.0
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2.0)
    options = write_options(tmp_path / 'train_HAT_SRx2_ImageNet_from_scratch.yml', opt)
    run_python(['-m', PROG, '-opt', str(options)], cwd=tmp_path)
    assert (tmp_path / 'experiments' / 'release_imagenet' / 'models' / 'net_g_latest.pth').is_file()


@pytest.mark.parametrize('problem', ['val_freq 0', 'empty yaml'])
def test_the_entry_point_ends_with_one_line_and_creates_nothing(sr_data, tmp_path, problem):
    options = tmp_path / 'opt.yml'
    if problem == 'empty yaml':
        options.write_text('# nothing but a comment\n')
        expected = (
            f'{PROG}: error: OptionFileError: {options}: the option file holds nothing; expected a mapping '
            'of options (name, model_type, scale, datasets, network_g, ...)'
        )
    else:
        write_options(options, edited(sr_data, lambda o: o['val'].update(val_freq=0)))
        expected = f'{PROG}: error: OptionFileError: {options}: val.val_freq: got 0, expected a positive integer'
    proc = run_python(['-m', PROG, '-opt', str(options)], cwd=tmp_path, check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ['opt.yml']


def dataset_error(dataset_opt: Dict, reading: str) -> BaseException:
    """What building `dataset_opt` with BasicSR and reading its sample whose GT or LQ path ends
    with `reading` raises (folder scans are unsorted)."""
    from basicsr.data import build_dataset

    with pytest.raises(Exception) as error:
        dataset = build_dataset(dataset_opt)
        dataset[
            next(
                index
                for index, pair in enumerate(dataset.paths)
                if any(str(path).endswith(reading) for path in pair.values())
            )
        ]
    return error.value


def paired(data: Dict[str, Path], **options: Any) -> Dict:
    return {
        'name': 'hostile',
        'type': 'PairedImageDataset',
        'dataroot_gt': str(data['train_hr']),
        'dataroot_lq': str(data['train_lr']),
        'io_backend': {'type': 'disk'},
        'phase': 'train',
        'scale': SCALE,
        'gt_size': 32,
        'use_hflip': False,
        'use_rot': False,
        **options,
    }


def copied_pairs(data: Dict[str, Path], root: Path, suffix: str = '') -> Dict[str, Path]:
    folders = {name: root / f'{name}{suffix}' for name in ('HR', 'LR')}
    for name, folder in folders.items():
        shutil.copytree(data[f'train_{name.lower()}{"_lmdb" if suffix else ""}'], folder)
    return folders


def test_a_zero_byte_image_in_a_paired_dataset_is_named(sr_data, tmp_path):
    folders = copied_pairs(sr_data, tmp_path)
    empty = sorted(folders['LR'].iterdir())[1]
    empty.write_bytes(b'')
    error = dataset_error(paired(sr_data, dataroot_gt=str(folders['HR']), dataroot_lq=str(folders['LR'])), empty.name)
    assert user_error_message(error) == f'ImageError: cannot decode image {empty}: it is empty (0 bytes)'


def test_a_key_missing_from_an_lmdb_is_named(sr_data, tmp_path):
    folders = copied_pairs(sr_data, tmp_path, '.lmdb')
    for folder in folders.values():  # both lists name a key the databases do not hold
        with open(folder / 'meta_info.txt', 'a') as fout:
            fout.write('ghost.png (48,48,3) 1\n')
    error = dataset_error(
        paired(sr_data, dataroot_gt=str(folders['HR']), dataroot_lq=str(folders['LR']), io_backend={'type': 'lmdb'}),
        'ghost',
    )
    assert user_error_message(error) == (f'ImageError: LMDB {folders["HR"]} has no key ghost (check its meta_info.txt)')


def test_basicsr_checks_of_folders_and_crops_are_reported_in_one_line(sr_data, tmp_path):
    folders = copied_pairs(sr_data, tmp_path)
    sorted(folders['LR'].iterdir())[0].unlink()
    error = dataset_error(paired(sr_data, dataroot_gt=str(folders['HR']), dataroot_lq=str(folders['LR'])), '')
    assert user_error_message(error) == ('DatasetError: lq and gt datasets have different number of images: 3, 4.')
    error = dataset_error(paired(sr_data, gt_size=64), '')
    assert user_error_message(error).startswith('DatasetError: LQ (24, 24) is smaller than patch size (32, 32)')


@pytest.mark.parametrize(
    'error',
    [
        KeyError('params'),
        TypeError("unsupported operand type(s) for +: 'int' and 'str'"),
        ZeroDivisionError('division by zero'),
        AssertionError('an internal invariant'),
        ValueError('internal'),
    ],
)
def test_an_unexpected_error_inside_the_pipeline_keeps_its_traceback(sr_data, tmp_path, monkeypatch, error):
    import basicsr.train

    def broken_build_model(opt):
        raise copy.copy(error)

    monkeypatch.setattr(basicsr.train, 'build_model', broken_build_model)
    options = write_options(tmp_path / 'opt.yml', train_options(sr_data, 'internal', val_freq=None))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(type(error)):
        train_main(['-opt', str(options)])


def test_hat_basicsr_traceback_shows_the_traceback_of_a_user_error(monkeypatch):
    def refused(root: str) -> None:
        raise OptionFileError('x.yml: val.val_freq: got 0, expected a positive integer')

    with pytest.raises(SystemExit, match='val.val_freq: got 0'):
        run_pipeline(refused, PROG, [])
    monkeypatch.setenv('HAT_BASICSR_TRACEBACK', '1')
    with pytest.raises(OptionFileError):
        run_pipeline(refused, PROG, [])


def test_an_unexpected_error_shows_its_traceback_from_the_entry_point(sr_data, tmp_path):
    options = write_options(tmp_path / 'opt.yml', train_options(sr_data, 'internal', val_freq=None))
    code = (
        'import sys\n'
        'import hat_basicsr.train as entry\n'
        'import basicsr.train\n'
        'def build_model(opt):\n'
        '    raise KeyError("a bug of the project")\n'
        'basicsr.train.build_model = build_model\n'
        'entry.main(sys.argv[1:])\n'
    )
    proc = run_python(['-c', code, '-opt', str(options)], cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert 'Traceback (most recent call last)' in proc.stderr and 'in build_model' in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "KeyError: 'a bug of the project'"


def test_option_files_written_by_yaml_dump_round_trip(sr_data, tmp_path):
    """The checks see what BasicSR's loader makes of a file (OrderedDicts, !!float), not only dicts."""
    options = write_options(tmp_path / 'opt.yml', release_imagenet(sr_data))
    text = options.read_text().replace('save_checkpoint_freq: 10000.0', 'save_checkpoint_freq: !!float 1e4')
    options.write_text(text)
    assert yaml.safe_load(text)['logger']['save_checkpoint_freq'] == 1e4
    precheck_option_file(['-opt', str(options)], PROG, is_train=True)
