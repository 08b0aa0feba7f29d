"""End-to-end training through hat_basicsr.train (BasicSR's pipeline) on CPU: folders and LMDB,
EMA, checkpoints, validation, resume after a kill, atomic checkpoints."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import (
    in_process_model,
    kill_training_when,
    read_log,
    run_python,
    train_options,
    val_dataset,
    write_options,
)


def _train(tmp_path: Path, opt: dict, *extra: str) -> Path:
    """Train from a scratch working directory via `python hat_basicsr/train.py`; returns the run folder."""
    options = write_options(tmp_path / f'{opt["name"]}.yml', opt)
    script = Path(__file__).resolve().parents[1] / 'hat_basicsr' / 'train.py'
    run_python([str(script), '-opt', str(options), *extra], cwd=tmp_path)
    return tmp_path / 'experiments' / opt['name']


def test_train_from_folders_with_ema_checkpoints_and_validation(sr_data, tmp_path):
    run = _train(tmp_path, train_options(sr_data, 'folder_run', total_iter=4, checkpoint_freq=2, val_freq=2))

    assert {p.name for p in (run / 'models').iterdir()} == {'net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth'}
    assert {p.name for p in (run / 'training_states').iterdir()} == {'2.state', '4.state'}
    assert (tmp_path / 'tb_logger' / 'folder_run').is_dir()
    assert sorted(p.name for p in (run / 'visualization' / 'img000').iterdir()) == [
        'img000_2.png',
        'img000_4.png',  # also the final validation's (BasicSR labelled it 5: its counter ran past the end)
    ]
    log = read_log(run, 'train')
    assert log.count('Validation tiny_val') == 3
    assert 'iter:       4, lr:' in log and 'eta: 0:00:00' in log and 'day' not in log  # BasicSR: -1 day, 23:59:58
    assert ' @ 5 iter' not in log and log.rsplit('Validation tiny_val', 1)[1].count(' @ 4 iter') == 2
    assert '# psnr:' in log and '# ssim:' in log
    assert 'Model [HATModel] is created.' in log
    assert 'Training plan (hat-basicsr plan):' in log and 'batch: 2 per rank, 2 in total' in log
    assert 'iterations: 4 = 8 samples = 2.00 epochs over 4 training images' in log

    checkpoint = torch.load(run / 'models' / 'net_g_latest.pth', weights_only=True)
    assert set(checkpoint) == {'params', 'params_ema'}
    assert not any(key.startswith(('module.', '_orig_mod.')) for key in checkpoint['params'])
    differs = [
        key
        for key, value in checkpoint['params'].items()
        if value.is_floating_point() and not torch.equal(value, checkpoint['params_ema'][key])
    ]
    assert differs, 'EMA weights equal net_g weights after 4 iterations with decay 0.9'
    state = torch.load(run / 'training_states' / '4.state', weights_only=True)
    assert (state['iter'], len(state['optimizers']), len(state['schedulers'])) == (4, 1, 1)
    assert not list(run.rglob('*.tmp')), 'atomic_save left a temporary file'

    images = _tensorboard_images(tmp_path / 'tb_logger' / 'folder_run')
    assert sorted(images) == ['val_images/tiny_val/img000', 'val_images/tiny_val/img001']
    for events in images.values():
        assert [event.step for event in events] == [2, 4, 4]  # the final validation is iteration 4's model
        assert {(event.height, event.width) for event in events} == {(32, 3 * 32)}  # LQ | SR | GT
    final = _decoded(images['val_images/tiny_val/img000'][-1])
    saved_sr = cv2.imread(str(run / 'visualization' / 'img000' / 'img000_4.png'))[:, :, ::-1]
    gt = cv2.imread(str(sr_data['val_hr'] / 'img000.png'))[:, :, ::-1]
    assert np.abs(final[:, 32:64].astype(int) - saved_sr).max() <= 1
    assert np.abs(final[:, 64:].astype(int) - gt).max() <= 1


def _tensorboard_images(folder: Path) -> dict:
    """{tag: image events} of the TensorBoard event files in `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={'images': 0})
    events.Reload()
    return {tag: events.Images(tag) for tag in events.Tags()['images']}


def _decoded(event) -> np.ndarray:
    """An image event as an RGB uint8 array."""
    return cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]


@pytest.mark.parametrize('tb_images', [0, 1])
def test_validation_writes_val_tb_images_to_tensorboard(sr_data, tmp_path, tb_images):
    from torch.utils.tensorboard import SummaryWriter

    opt = train_options(sr_data, 'x')
    model = in_process_model(sr_data, tmp_path, val={**opt['val'], 'tb_images': tb_images})
    with SummaryWriter(str(tmp_path / 'tb')) as writer:
        model.validation(_val_loader(sr_data), current_iter=3, tb_logger=writer, save_img=False)
    images = _tensorboard_images(tmp_path / 'tb')
    assert sorted(images) == ['val_images/tiny_val/img000'][:tb_images]
    assert [event.step for events in images.values() for event in events] == [3] * tb_images


@pytest.mark.parametrize('dataset_type', ['PairedImageDataset', 'ImageNetPairedDataset'])
def test_train_from_lmdb(sr_data, tmp_path, dataset_type):
    dataset = {'type': dataset_type, 'dataroot_gt': str(sr_data['train_hr_lmdb']), 'io_backend': {'type': 'lmdb'}}
    if dataset_type == 'PairedImageDataset':
        dataset['dataroot_lq'] = str(sr_data['train_lr_lmdb'])
    run = _train(
        tmp_path,
        train_options(
            sr_data, f'lmdb_{dataset_type}', total_iter=2, checkpoint_freq=2, val_freq=2, train_dataset=dataset
        ),
    )
    log = read_log(run, 'train')
    assert f'Dataset [{dataset_type}] - tiny_train is built.' in log
    assert 'iter:       2' in log and '# psnr:' in log
    assert (run / 'models' / 'net_g_2.pth').is_file()


def test_cuda_prefetch_mode_trains_on_cpu_without_pin_memory(sr_data, tmp_path):
    opt = train_options(sr_data, 'cuda_prefetch', total_iter=2, checkpoint_freq=2, val_freq=None)
    opt['datasets']['train']['prefetch_mode'] = 'cuda'
    run = _train(tmp_path, opt)
    assert 'using the CPU prefetcher instead' in read_log(run, 'train_cuda_prefetch')
    assert (run / 'models' / 'net_g_2.pth').is_file()


def _val_loader(sr_data):
    from basicsr.data import build_dataloader, build_dataset

    dataset_opt = val_dataset(sr_data)
    return build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0)


def test_net_g_is_back_in_train_mode_after_validation(sr_data, tmp_path):
    model = in_process_model(sr_data, tmp_path)
    del model.net_g_ema  # without EMA, validation runs net_g itself
    assert model.net_g.training
    model.validation(_val_loader(sr_data), current_iter=1, tb_logger=None, save_img=False)
    assert model.net_g.training
    assert model.metric_results['psnr'] > 10


def test_training_state_is_plain_and_resumes_with_weights_only(sr_data, tmp_path):
    import numpy as np

    model = in_process_model(sr_data, tmp_path)
    model.schedulers[0].gamma = np.float64(0.5)  # e.g. computed by a user with numpy
    model.save_training_state(epoch=3, current_iter=7)
    state = torch.load(tmp_path / 'training_states' / '7.state', weights_only=True)
    assert type(state['schedulers'][0]['gamma']) is float
    assert dict(state['schedulers'][0]['milestones']) == {2: 1, 1000: 1}
    model.resume_training(state)


def test_checkpoint_write_failure_keeps_the_previous_checkpoint(sr_data, tmp_path, monkeypatch):
    model = in_process_model(sr_data, tmp_path)
    model.save(epoch=0, current_iter=1)
    checkpoint = tmp_path / 'models' / 'net_g_1.pth'
    before = checkpoint.read_bytes()
    with torch.no_grad():
        next(model.net_g.parameters()).add_(1.0)

    class Killed(BaseException):
        """Like a signal: not an Exception, so no `except Exception` may swallow it."""

    def save_half_then_die(obj, target, *args, **kwargs):
        target.write(b'PK\x03\x04 half a checkpoint')
        raise Killed('killed while saving')

    monkeypatch.setattr(torch, 'save', save_half_then_die)
    with pytest.raises(Killed):
        model.save_network(model.net_g, 'net_g', 1)
    with pytest.raises(Killed):
        model.save_training_state(epoch=0, current_iter=1)
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / 'models').iterdir()) == ['net_g_1.pth']
    assert sorted(p.name for p in (tmp_path / 'training_states').iterdir()) == ['1.state']


def test_killed_run_continues_with_auto_resume(sr_data, tmp_path):
    opt = train_options(sr_data, 'killed_run', total_iter=100000, checkpoint_freq=2, val_freq=None)
    options = write_options(tmp_path / 'killed.yml', opt)
    states = tmp_path / 'experiments' / 'killed_run' / 'training_states'
    pid = kill_training_when(
        options,
        tmp_path,
        lambda: states.is_dir() and any(p.suffix == '.state' for p in states.iterdir()),
        'a checkpoint',
    )
    saved = max(int(p.stem) for p in states.iterdir() if p.suffix == '.state')
    assert saved >= 2 and saved % 2 == 0
    lock = tmp_path / 'experiments' / 'killed_run.lock'
    assert str(pid) in lock.read_text(), 'kill -9 leaves the lock file behind'

    resumed = run_python(
        [
            '-m',
            'hat_basicsr.train',
            '-opt',
            str(options),
            '--auto_resume',
            '--force_yml',
            f'train:total_iter={saved + 2}',
        ],
        cwd=tmp_path,
    )
    assert f'Took over the stale lock {lock} of a run that no longer runs (pid {pid} ' in resumed.stderr
    assert not lock.exists()
    log = read_log(tmp_path / 'experiments' / 'killed_run', 'train')
    assert 'Resuming training from epoch: ' in log and f'iter: {saved}.' in log
    assert f'iter:{saved + 2:>8d},' in log
    assert (tmp_path / 'experiments' / 'killed_run' / 'models' / f'net_g_{saved + 2}.pth').is_file()


def test_demo_reports_hat_against_bicubic(sr_data, trained_checkpoint, tmp_path, monkeypatch, capsys):
    """The demo's flow after data and training (both replaced here; the pipeline is tested above):
    EMA weights of the run vs bicubic on the validation images, exit status from the comparison."""
    from hat_basicsr import demo

    options = write_options(tmp_path / 'demo.yml', train_options(sr_data, 'demo_run'))
    models = tmp_path / 'experiments' / 'demo_run' / 'models'
    built, trained = [], []
    monkeypatch.setattr(demo, 'build_demo_data', built.append)
    monkeypatch.setattr(
        demo.train,
        'main',
        lambda argv: (
            trained.append(argv),
            models.mkdir(parents=True),
            (models / 'net_g_latest.pth').write_bytes(trained_checkpoint.read_bytes()),
        ),
    )
    monkeypatch.chdir(tmp_path)
    status = demo.main(['--opt', str(options)])
    out = capsys.readouterr()
    assert built == ['datasets/demo'] and trained == [['-opt', str(options)]]
    rows = {
        line.split()[0]: [float(v) for v in line.split()[1:]]
        for line in out.out.splitlines()
        if line.startswith(('img00', 'mean'))
    }
    assert set(rows) == {'img000.png', 'img001.png', 'mean'}
    assert all(20 < bicubic < 60 and 5 < hat < 60 for bicubic, hat in rows.values())
    gain = rows['mean'][1] - rows['mean'][0]
    verdict = re.search(r'HAT (beats|does NOT beat) bicubic(?: by|:) ([-+.\d]+) dB', out.out + out.err)
    assert abs(float(verdict.group(2)) - gain) <= 0.011
    assert (status, verdict.group(1)) == ((0, 'beats') if gain > 0 else (1, 'does NOT beat'))


def test_compiled_net_g_saves_plain_keys_and_updates_ema(sr_data, tmp_path):
    model = in_process_model(sr_data, tmp_path)
    model.net_g = torch.compile(model.net_g)  # compiled lazily: nothing is compiled here
    assert model.get_bare_model(model.net_g) is model.net_g._orig_mod
    model.model_ema(decay=0.5)
    model.save(epoch=0, current_iter=1)
    checkpoint = torch.load(tmp_path / 'models' / 'net_g_1.pth', weights_only=True)
    assert checkpoint['params'].keys() == checkpoint['params_ema'].keys() == model.net_g_ema.state_dict().keys()


def test_validation_after_ema_updates_uses_the_current_ema_weights(sr_data, tmp_path):
    """BasicSR's EMA update writes through `.data`: nothing derived from the weights may go stale."""
    import copy

    model = in_process_model(sr_data, tmp_path)
    model.lq = torch.rand(1, 3, 16, 16)
    model.test()
    with torch.no_grad():
        for parameter in model.net_g.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    model.model_ema(decay=0.0)  # the EMA weights become net_g's
    model.test()
    with torch.no_grad():
        assert torch.allclose(model.output, copy.deepcopy(model.net_g).eval()(model.lq), atol=1e-6)


def test_network_scale_must_match_the_option_files_scale(sr_data, tmp_path):
    from hat_basicsr.errors import OptionFileError

    from helpers import TINY_HAT

    with pytest.raises(OptionFileError, match="network_g upscales by 4 but the option file's scale is 2"):
        in_process_model(sr_data, tmp_path, network_g={**TINY_HAT, 'upscale': 4})


def test_validation_refuses_lq_images_of_another_scale(sr_data, tmp_path):
    import cv2

    from hat_basicsr.errors import OptionFileError
    from hat_basicsr.models.basicsr_fixes import check_pair_scale

    from basicsr.data import build_dataloader, build_dataset

    quarter = tmp_path / 'LRx4'
    quarter.mkdir()
    for path in sorted(sr_data['val_hr'].iterdir()):
        image = cv2.imread(str(path))
        cv2.imwrite(str(quarter / path.name), cv2.resize(image, (image.shape[1] // 4, image.shape[0] // 4)))
    dataset_opt = {**val_dataset(sr_data), 'dataroot_lq': str(quarter)}
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0)
    model = in_process_model(sr_data, tmp_path)
    with pytest.raises(OptionFileError, match=r'is not the x2 LQ of .*check dataroot_lq and scale'):
        model.validation(loader, current_iter=1, tb_logger=None, save_img=False)
    check_pair_scale(loader.dataset, 4)
    check_pair_scale(build_dataset(val_dataset(sr_data)), 2)


def test_training_start_removes_temporaries_of_killed_saves(sr_data, tmp_path):
    models = tmp_path / 'models'
    models.mkdir()
    stale, kept = models / '.net_g_100.pth.0123abcd.tmp', models / 'notes.tmp'
    stale.write_bytes(b'half a checkpoint')
    kept.write_text('not ours')
    in_process_model(sr_data, tmp_path)
    assert not stale.exists() and kept.exists()
