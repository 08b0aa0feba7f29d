"""Each fix in hat_basicsr.basicsr_compat, shown to be needed and to work."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import cv2
import pytest
import torch

import hat_basicsr  # noqa: F401

from helpers import REPO_ROOT, free_port, run_python, subprocess_env


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plain_basicsr_import_fails_on_this_torchvision():
    """Why the functional_tensor shim exists: without hat_basicsr, `import basicsr` breaks."""
    proc = _python('import basicsr')
    assert proc.returncode != 0
    assert 'torchvision.transforms.functional_tensor' in proc.stderr


def test_import_hat_basicsr_then_basicsr_and_again():
    proc = _python("""
        import hat_basicsr
        import basicsr
        import hat_basicsr
        from hat_basicsr import basicsr_compat
        import basicsr.train as train
        before = (train.load_resume_state, train.CUDAPrefetcher)
        basicsr_compat.apply()
        assert (train.load_resume_state, train.CUDAPrefetcher) == before, 'apply() is not idempotent'
        from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
        print(ARCH_REGISTRY.get('HAT').__name__, MODEL_REGISTRY.get('HATModel').__name__)
        from torchvision.transforms.functional_tensor import rgb_to_grayscale
        from basicsr.data.degradations import random_add_gaussian_noise_pt
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ['HAT', 'HATModel']


@pytest.fixture
def fake_process_group(monkeypatch):
    """Record what init_process_group would be called with, instead of starting one."""
    calls = {}
    monkeypatch.setattr(torch.distributed, 'init_process_group', lambda backend, **kw: calls.update(backend=backend))
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: calls.update(device=device))
    return calls


def test_torchrun_picks_the_gpu_from_local_rank(fake_process_group, monkeypatch):
    from basicsr.utils import dist_util

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 4)
    # a node whose ranks are not a contiguous block: basicsr would take GPU 5 % 4 = 1, not 3
    monkeypatch.setenv('RANK', '5')
    monkeypatch.setenv('LOCAL_RANK', '3')
    dist_util._init_dist_pytorch('nccl')
    assert fake_process_group == {'device': 3, 'backend': 'nccl'}


def test_pytorch_launcher_uses_gloo_without_cuda(fake_process_group, monkeypatch):
    from basicsr.utils import dist_util

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('LOCAL_RANK', '1')
    dist_util._init_dist_pytorch('nccl')
    assert fake_process_group == {'backend': 'gloo'}


def test_ddp_wraps_cpu_models_without_device_ids(monkeypatch):
    from basicsr.models.base_model import BaseModel

    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(free_port()))
    torch.distributed.init_process_group('gloo', rank=0, world_size=1)
    try:
        model = BaseModel({'num_gpu': 0, 'is_train': True, 'dist': True})
        net = model.model_to_device(torch.nn.Linear(2, 2))
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
        assert net.device_ids is None
        net(torch.ones(1, 2)).sum().backward()
    finally:
        torch.distributed.destroy_process_group()


def test_resume_state_loads_on_cpu_where_basicsr_chooses_it(tmp_path):
    """BasicSR's load_resume_state mapped the state onto torch.cuda.current_device(); with the fix
    alone (no training policy: a plain `import hat_basicsr`) the state it chooses loads on the CPU
    with weights_only=True, and one that does not load is named."""
    states = tmp_path / 'experiments' / 'run' / 'training_states'
    states.mkdir(parents=True)
    for name, iteration in (('2.state', 2), ('10.state', 10), ('.12.state.x1.tmp', 12)):
        torch.save({'iter': iteration, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / name)
    (states / 'notes.state').write_text('not a state of an iteration')
    proc = run_python(
        [
            '-c',
            textwrap.dedent("""
                import torch
                import hat_basicsr
                import basicsr.train
                from hat_basicsr.errors import CheckpointError

                assert not torch.cuda.is_available()
                opt = {'auto_resume': True, 'name': 'run', 'network_g': {},
                       'path': {'models': 'experiments/run/models', 'resume_state': None}}
                state = basicsr.train.load_resume_state(opt)
                print('chosen', state['iter'], opt['path']['resume_state'], opt['path']['pretrain_network_g'])
                opt['auto_resume'] = False
                opt['path']['resume_state'] = 'experiments/run/training_states/notes.state'
                try:
                    basicsr.train.load_resume_state(opt)
                except CheckpointError as error:
                    print('refused', error)
            """),
        ],
        tmp_path,
        timeout=120,
    )
    chosen, refused = [line for line in proc.stdout.splitlines() if line.startswith(('chosen ', 'refused '))]
    assert chosen.split() == [
        'chosen',
        '10',
        'experiments/run/training_states/10.state',
        'experiments/run/models/net_g_10.pth',
    ]
    assert refused.startswith('refused cannot load training state experiments/run/training_states/notes.state: ')


def test_multistep_scheduler_state_loads_with_weights_only():
    """MultiStepRestartLR keeps milestones in a collections.Counter; weights_only must accept it."""
    from basicsr.models.lr_scheduler import MultiStepRestartLR

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = MultiStepRestartLR(optimizer, milestones=[2, 4], gamma=0.5)
    buffer = io.BytesIO()
    torch.save({'schedulers': [scheduler.state_dict()], 'optimizers': [optimizer.state_dict()]}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state['schedulers'][0]['milestones'] == Counter({2: 1, 4: 1})


def test_cuda_prefetch_mode_falls_back_to_cpu_with_a_warning(caplog):
    import basicsr.train

    batches = [{'lq': torch.zeros(1)}, {'lq': torch.ones(1)}]
    with caplog.at_level('WARNING', logger='basicsr'):
        prefetcher = basicsr.train.CUDAPrefetcher(batches, {'num_gpu': 0, 'datasets': {'train': {}}})
    assert 'CPU prefetcher' in caplog.text
    assert [prefetcher.next(), prefetcher.next(), prefetcher.next()] == [*batches, None]
    prefetcher.reset()
    assert prefetcher.next() is batches[0]


@pytest.mark.parametrize('module', ['hat_basicsr.train', 'hat_basicsr.test'])
def test_torch_distributed_launch_gets_a_torchrun_message(module, tmp_path):
    proc = subprocess.run(
        [sys.executable, '-m', module, '--local-rank=0', '-opt', 'x.yml'],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert 'torchrun --nproc_per_node' in proc.stderr and 'Traceback' not in proc.stderr


def test_basicsr_train_and_test_paths_use_no_removed_numpy_aliases():
    """numpy 2 removed np.float/np.int/np.bool and friends; the modules the pipelines run must not use them."""
    import basicsr

    root = Path(basicsr.__file__).parent
    removed = re.compile(
        r'\bnp\.(float|int|bool|object|complex|str|long|unicode|float_|complex_|string_|'
        r'product|cumproduct|alltrue|sometrue|in1d|row_stack|trapz|asfarray|Inf|NaN|NAN)\b(?!\d)'
    )
    modules = [
        'train.py',
        'test.py',
        'utils/misc.py',
        'utils/options.py',
        'utils/img_util.py',
        'utils/matlab_functions.py',
        'utils/lmdb_util.py',
        'data/paired_image_dataset.py',
        'data/transforms.py',
        'data/data_util.py',
        'metrics/psnr_ssim.py',
        'metrics/metric_util.py',
        'utils/color_util.py',
        'models/sr_model.py',
        'models/base_model.py',
        'models/lr_scheduler.py',
    ]
    hits = [
        f'{name}:{number}: {line.strip()}'
        for name in modules
        for number, line in enumerate((root / name).read_text().splitlines(), 1)
        if removed.search(line)
    ]
    assert not hits, hits


@pytest.fixture
def tiny_lmdb(tmp_path):
    import cv2
    import numpy as np

    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    folder = tmp_path / 'images'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8))
    make_lmdb_from_imgs(str(folder), str(tmp_path / 'db.lmdb'), ['a.png'], ['a'])
    return str(tmp_path / 'db.lmdb')


def test_py_lmdb_refuses_to_open_an_environment_twice(tiny_lmdb):
    """Why the LmdbBackend fix exists (py-lmdb >= 3.0)."""
    import lmdb

    first = lmdb.open(tiny_lmdb, readonly=True, lock=False)
    try:
        with pytest.raises(lmdb.Error, match='already open'):
            lmdb.open(tiny_lmdb, readonly=True, lock=False)
    finally:
        first.close()


def _read_in_child(path: str, results) -> None:
    from basicsr.utils import FileClient

    results.put(FileClient('lmdb', db_paths=path).get('a'))


def test_two_lmdb_file_clients_on_one_database_and_a_forked_worker(tiny_lmdb):
    import multiprocessing

    from basicsr.utils import FileClient

    train, val = (FileClient('lmdb', db_paths=tiny_lmdb) for _ in range(2))
    assert train.get('a') == val.get('a') and len(train.get('a')) > 0
    context = multiprocessing.get_context('fork')  # how DataLoader workers start on Linux
    results = context.Queue()
    worker = context.Process(target=_read_in_child, args=(tiny_lmdb, results))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0 and results.get(timeout=5) == train.get('a')
    assert val.get('a') == train.get('a')  # the parent's environment is untouched by the child


def test_imfrombytes_names_no_file_for_bytes_it_cannot_decode():
    """Why the imfrombytes fix exists: bytes that carry no source still fail as in BasicSR."""
    from basicsr.utils import imfrombytes

    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'astype'"):
        imfrombytes(b'not an image', float32=True)
    assert imfrombytes(b'not an image') is None


@pytest.mark.parametrize('damage', ['truncated', 'empty'])
@pytest.mark.parametrize('workers', [0, 1])
def test_an_undecodable_image_is_named_by_the_dataset_and_its_workers(tmp_path, damage, workers):
    """BasicSR's datasets import imfrombytes by name; from a DataLoader worker only the message
    reaches the parent, so it names the file."""
    import numpy as np

    from hat_basicsr.errors import ImageError

    from basicsr.data import build_dataset

    broken = tmp_path / 'broken.png'
    cv2.imwrite(str(broken), np.full((16, 16, 3), 128, np.uint8))
    broken.write_bytes(broken.read_bytes()[:40] if damage == 'truncated' else b'')
    options = {'name': 'single', 'type': 'SingleImageDataset', 'dataroot_lq': str(tmp_path), 'phase': 'val'}
    dataset = build_dataset({**options, 'io_backend': {'type': 'disk'}})
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers)
    with pytest.raises(ImageError) as error:
        next(iter(loader))
    problem = {'empty': ': it is empty (0 bytes)', 'truncated': ' (truncated or corrupt file, or not an image)'}[damage]
    assert str(error.value).strip().splitlines()[-1].endswith(f'cannot decode image {broken}{problem}')


def test_a_key_missing_from_an_lmdb_is_named_with_the_database(tiny_lmdb):
    """BasicSR's LmdbBackend returns None, which imfrombytes refuses in np.frombuffer, naming nothing."""
    from hat_basicsr.errors import ImageError

    from basicsr.utils import FileClient, imfrombytes

    client = FileClient('lmdb', db_paths=tiny_lmdb)
    assert imfrombytes(client.get('a'), float32=True).shape == (48, 48, 3)
    with pytest.raises(
        ImageError, match=rf'^LMDB {re.escape(tiny_lmdb)} has no key ghost \(check its meta_info.txt\)$'
    ):
        client.get('ghost')


def test_a_training_pair_of_the_wrong_scale_names_both_files(tmp_path):
    """BasicSR's message was a printed tuple naming no file; the train entry point shows this one line."""
    import numpy as np

    from hat_basicsr.errors import DatasetError
    from hat_basicsr.utils.user_errors import user_error_message

    from basicsr.data import build_dataset

    for folder, size in (('HR', (64, 48)), ('LR', (20, 24))):  # (height, width): LR made for x3, not x2
        (tmp_path / folder).mkdir()
        assert cv2.imwrite(str(tmp_path / folder / 'a.png'), np.zeros((*size, 3), np.uint8))
    dataset = build_dataset(
        {
            'name': 'pairs',
            'type': 'PairedImageDataset',
            'dataroot_gt': str(tmp_path / 'HR'),
            'dataroot_lq': str(tmp_path / 'LR'),
            'io_backend': {'type': 'disk'},
            'phase': 'train',
            'scale': 2,
            'gt_size': 32,
            'use_hflip': False,
            'use_rot': False,
        }
    )
    with pytest.raises(DatasetError) as error:
        dataset[0]
    expected = (
        f'GT {tmp_path / "HR" / "a.png"} (48x64) is not 2x its LQ {tmp_path / "LR" / "a.png"} (24x20): '
        'check dataroot_lq and scale'
    )
    assert str(error.value) == expected
    assert user_error_message(error.value) == f'DatasetError: {expected}'


def test_eta_counts_the_iterations_left_and_ends_at_zero():
    """BasicSR's MessageLogger counted one iteration too few: `eta: -1 day, 23:59:58` at the last one."""
    import time

    from basicsr.utils.logger import MessageLogger

    opt = {'name': 'eta', 'logger': {'print_freq': 1, 'use_tb_logger': False}, 'train': {'total_iter': 4}}
    message_logger = MessageLogger(opt, start_iter=0)
    messages = []
    message_logger.logger = type('Recorder', (), {'info': staticmethod(messages.append)})
    for iteration in (2, 4):
        message_logger.start_time = time.time() - 10 * (iteration + 1)  # 10 s per iteration so far
        message_logger({'epoch': 0, 'iter': iteration, 'lrs': [1e-3], 'time': 10.0, 'data_time': 0.0})
    assert re.search(r'eta: 0:00:(19|20),', messages[0]) and 'eta: 0:00:00,' in messages[1], messages
    assert message_logger.max_iters == 4


def test_basicsr_data_checks_refuse_with_a_dataset_error(tmp_path):
    """Without the fix paired_paths_from_folder's `assert` is an AssertionError (a traceback, like a
    bug); the datasets hold the function by name, so the patched one must be what they call."""
    from hat_basicsr.errors import DatasetError

    from basicsr.data import data_util, paired_image_dataset

    for name, count in (('gt', 2), ('lq', 1)):
        (tmp_path / name).mkdir()
        for index in range(count):
            (tmp_path / name / f'{index}.png').write_bytes(b'')
    assert paired_image_dataset.paired_paths_from_folder is data_util.paired_paths_from_folder
    with pytest.raises(DatasetError, match='lq and gt datasets have different number of images: 1, 2'):
        paired_image_dataset.paired_paths_from_folder([str(tmp_path / 'lq'), str(tmp_path / 'gt')], ['lq', 'gt'], '{}')
    with pytest.raises(DatasetError, match=r'should both in lmdb formats'):
        data_util.paired_paths_from_lmdb([str(tmp_path / 'lq'), str(tmp_path / 'gt')], ['lq', 'gt'])


def test_an_error_of_the_code_a_data_check_calls_keeps_its_type():
    from hat_basicsr.basicsr_compat import _fix_data_check
    from hat_basicsr.errors import DatasetError

    def refuses():
        raise AssertionError('the check refuses')

    def parse(text: str) -> int:
        return int(text)

    def calls_deeper():
        return parse('not a number')  # a ValueError of the code the check calls, not a refusal

    with pytest.raises(DatasetError, match='the check refuses'):
        _fix_data_check(refuses)()
    with pytest.raises(ValueError, match='invalid literal') as raised:
        _fix_data_check(calls_deeper)()
    assert not isinstance(raised.value, DatasetError)
