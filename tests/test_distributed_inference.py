"""Inference and testing split over processes: `hat-basicsr upscale` under torchrun and with
--shard, and `hat_basicsr.test` under torchrun, give what one process gives, each output once."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import cv2
import pytest
import torch

from hat_basicsr import HAT
from hat_basicsr.cli import upscale
from hat_basicsr.utils.sharding import Shard

from basicsr.data import build_dataloader, build_dataset
from basicsr.models.sr_model import SRModel

from helpers import (
    SCALE,
    TINY_HAT,
    TINY_OPTIONS,
    in_process_model,
    photo_crops,
    read_log,
    run_command,
    run_python,
    run_torchrun,
    subprocess_env,
    val_dataset,
    write_options,
    write_pairs,
)

HAT_BASICSR = str(Path(sys.executable).parent / 'hat-basicsr')
# Runs `-m hat_basicsr.test` as __main__ with one test-only addition: each rank appends the names
# of the images it validates to PROBE_DIR/rank<RANK>.txt.
PROBE = """
import os, runpy
from hat_basicsr.models.hat_model import HATModel

validate_image = HATModel._validate_image

def validate_and_record(self, data, *args):
    with open(os.path.join(os.environ['PROBE_DIR'], f"rank{self.opt['rank']}.txt"), 'a') as record:
        record.write(os.path.basename(data['lq_path'][0]) + '\\n')
    return validate_image(self, data, *args)

HATModel._validate_image = validate_and_record
runpy.run_module('hat_basicsr.test', run_name='__main__')
"""
CORRUPT = 'frame1.png'  # sorted position 1: rank 1's share of 2, shard 1/3's share of 3


@pytest.fixture(scope='module')
def frames(tmp_path_factory):
    """Seven small frames (one corrupt), a tiny x2 checkpoint, and one process's outputs."""
    root = tmp_path_factory.mktemp('frames')
    torch.manual_seed(1)
    torch.save({'params_ema': HAT(upscale=SCALE, **TINY_OPTIONS).state_dict()}, root / 'tiny.pth')
    inputs = root / 'in'
    inputs.mkdir()
    for index, crop in enumerate(photo_crops(7, 20, offset=3)):
        cv2.imwrite(str(inputs / f'frame{index}.png'), crop)
    (inputs / CORRUPT).write_bytes((inputs / CORRUPT).read_bytes()[:60])
    status = run_command(
        upscale.add_parser,
        ['upscale', str(inputs), '-o', str(root / 'one'), '-m', str(root / 'tiny.pth'), '--device', 'cpu'],
    )
    assert status == 1
    return root


def outputs(folder: Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_torchrun_ranks_split_the_folder_and_report_once(frames):
    """Two CPU ranks: the outputs are one process's, byte for byte; rank 0 alone shows a bar (its
    share: 4 of 7) and the job's summary; the corrupt frame in rank 1's share fails the job."""
    proc = run_torchrun(
        ['--no-python', HAT_BASICSR, 'upscale', 'in', '-o', 'two', '-m', 'tiny.pth', '--device', 'auto'],
        cwd=frames,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    one = outputs(frames / 'one')
    assert len(one) == 6 and outputs(frames / 'two') == one
    assert proc.stdout.count(' written, ') == 1, proc.stdout
    assert '6 written, 0 skipped (existing), 1 failed (all 2 ranks)' in proc.stdout
    assert proc.stderr.count(f'failed: {Path("in") / CORRUPT}') == 1, proc.stderr[-3000:]
    assert ' 4/4 ' in proc.stderr and '/3 ' not in proc.stderr, proc.stderr[-3000:]


def test_shards_are_disjoint_and_cover_the_folder(frames, capsys):
    written = {}
    for index in range(3):
        folder = frames / f'shard{index}'
        argv = ['upscale', str(frames / 'in'), '-o', str(folder), '-m', str(frames / 'tiny.pth')]
        argv += ['--device', 'cpu', '--shard', f'{index}/3']
        assert run_command(upscale.add_parser, argv) == (1 if index == 1 else 0)
        written[index] = outputs(folder)
    names = [name for share in written.values() for name in share]
    assert len(names) == len(set(names)), 'a frame was written by two shards'
    assert {name: data for share in written.values() for name, data in share.items()} == outputs(frames / 'one')

    (frames / 'shard0' / 'frame3.png').unlink()  # a preempted share, run again
    capsys.readouterr()
    argv = ['upscale', str(frames / 'in'), '-o', str(frames / 'shard0'), '-m', str(frames / 'tiny.pth')]
    assert run_command(upscale.add_parser, [*argv, '--device', 'cpu', '--shard', '0/3', '--skip-existing']) == 0
    assert '1 written, 2 skipped (existing), 0 failed' in capsys.readouterr().out
    assert outputs(frames / 'shard0') == written[0]


def test_shards_of_torchrun_ranks_within_array_tasks_cover_each_item_once():
    items = list(range(23))
    shares = [Shard(task, 3).within(Shard(rank, 2)).select(items) for task in range(3) for rank in range(2)]
    assert sorted(item for share in shares for item in share) == items
    assert {len(share) for share in shares} == {3, 4}


@pytest.mark.parametrize('value', ['3/3', '-1/2', '1', 'a/b', '0/0'])
def test_bad_shard_is_one_line(frames, capsys, value):
    with pytest.raises(SystemExit) as stop:
        run_command(upscale.add_parser, ['upscale', 'in', '-o', 'out', '-m', 'm.pth', f'--shard={value}'])
    assert stop.value.code == 2
    assert f"argument --shard: expected K/N with 0 <= K < N (e.g. 0/4), got '{value}'" in capsys.readouterr().err


def test_validation_equals_basicsr_to_the_bit(sr_data, tmp_path):
    """The per-image validation that DDP gathers averages exactly as SRModel's own loop does."""
    model = in_process_model(sr_data, tmp_path)
    dataset_opt = val_dataset(sr_data)
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    model.validation(loader, 1, None, save_img=False)
    ours = dict(model.metric_results)
    SRModel.nondist_validation(model, loader, 1, None, save_img=False)
    assert ours == model.metric_results and set(ours) == {'psnr', 'ssim'}


def test_torchrun_test_pipeline_equals_one_process(frames, tmp_path):
    """hat_basicsr.test with two ranks over three pairs (shares of 2 and 1): the metrics one process
    logs, each image saved once, identical."""
    root = tmp_path / 'pairs'
    write_pairs(root, photo_crops(3, 32, offset=140))
    options = {
        'name': 'split_test',
        'model_type': 'HATModel',
        'scale': SCALE,
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {'test_1': val_dataset({'val_hr': root / 'HR', 'val_lr': root / 'LR'}, phase='test')},
        'network_g': copy.deepcopy(TINY_HAT),
        'path': {'pretrain_network_g': str(frames / 'tiny.pth'), 'strict_load_g': True},
        'val': {
            'save_img': True,
            'metrics': {
                'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True},
                'ssim': {'type': 'calculate_ssim', 'crop_border': SCALE, 'test_y_channel': True},
            },
        },
    }
    write_options(tmp_path / 'test.yml', options)
    (tmp_path / 'one').mkdir()
    (tmp_path / 'two').mkdir()
    run_python(['-m', 'hat_basicsr.test', '-opt', str(tmp_path / 'test.yml')], cwd=tmp_path / 'one')
    (tmp_path / 'probe.py').write_text(PROBE)
    proc = run_torchrun(
        [str(tmp_path / 'probe.py'), '-opt', str(tmp_path / 'test.yml'), '--launcher', 'pytorch'],
        cwd=tmp_path / 'two',
        env={**subprocess_env(), 'PROBE_DIR': str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    validated = [(tmp_path / f'rank{rank}.txt').read_text().split() for rank in (0, 1)]
    assert [len(names) for names in validated] == [2, 1]  # every 2nd dataset index (folder order)
    assert sorted(validated[0] + validated[1]) == ['img000.png', 'img001.png', 'img002.png']

    def metrics(run: str) -> tuple:
        log = read_log(tmp_path / run / 'results' / 'split_test', 'test')
        return re.findall(r'# (psnr|ssim): (\S+)', log), 'world_size: 2' in log

    (one, one_split), (two, two_split) = metrics('one'), metrics('two')
    assert [name for name, _ in one] == ['psnr', 'ssim'] and not one_split
    assert two == one and two_split
    images = {
        run: outputs(tmp_path / run / 'results' / 'split_test' / 'visualization' / 'tiny_val') for run in ('one', 'two')
    }
    assert len(images['one']) == 3 and images['two'] == images['one']
