"""Fixes for running PyPI BasicSR 1.4.2 on today's stack (torch >= 2.6, torchvision >= 0.17,
numpy 2, Python 3.11) and on machines without a GPU: only what cannot import or run otherwise.
Every fix says what breaks without it; tests/test_compat.py proves each.

`apply()` runs on `import hat_basicsr`, before anything imports basicsr, and is idempotent. Fixes
replace or wrap functions in basicsr's modules at import time; no installed file is edited. How a
training of this package starts and resumes (its lock, which state it resumes) is a policy, not a
fix: hat_basicsr.training_policy installs it, explicitly.
"""

import functools
import importlib
import logging
import os
import re
import sys
import types
from typing import Any, Callable, Dict, Optional, Tuple

import torch

PATCH_MARK = '_hat_basicsr_fix'
# The sizes in paired_random_crop's refusal of a pair: GT (h, w), scale, LQ (h, w).
SCALE_MISMATCH = re.compile(r'GT \((\d+), (\d+)\) is not (\d+)x .*LQ \((\d+), (\d+)\)')
logger = logging.getLogger('basicsr')
# LMDB environments opened through BasicSR's LmdbBackend: real path -> (pid of the opener, environment).
_lmdb_environments: Dict[str, Tuple[int, Any]] = {}


def _provide_torchvision_functional_tensor() -> None:
    """basicsr/data/degradations.py imports `torchvision.transforms.functional_tensor`, removed in
    torchvision 0.17; since basicsr/__init__.py imports everything, `import basicsr` fails. The one
    function it uses, rgb_to_grayscale, lives in torchvision.transforms.functional."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
        return
    except ImportError:
        pass
    from torchvision.transforms import functional

    shim = types.ModuleType(name, 'hat_basicsr shim: torchvision.transforms.functional_tensor was removed in 0.17')
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = shim


def patch_once(owner: Any, name: str, make: Callable[[Callable], Callable], rebind_in: str = '') -> None:
    """Replace `owner.name` by `make(original)` once per `make`; a second call with it leaves it
    alone, another `make` wraps the replacement (the training policy wraps a fix). Every change this
    package makes to BasicSR goes through here (the fixes below, hat_basicsr.training_policy).

    With `rebind_in` (a package name), its loaded modules that imported the original by name
    (`from basicsr.utils import imfrombytes`) get the replacement too: they hold their own reference."""
    original = getattr(owner, name)
    applied = getattr(original, PATCH_MARK, frozenset())
    maker = f'{make.__module__}.{make.__qualname__}'
    if maker in applied:
        return
    replacement = make(original)
    setattr(replacement, PATCH_MARK, applied | {maker})
    setattr(owner, name, replacement)
    if rebind_in:
        for module_name, module in list(sys.modules.items()):
            in_package = module_name == rebind_in or module_name.startswith(f'{rebind_in}.')
            if in_package and vars(module).get(name) is original:
                setattr(module, name, replacement)


def _fix_init_dist_pytorch(_original: Callable) -> Callable:
    """basicsr's `--launcher pytorch` picks the GPU as RANK % device_count (wrong GPU, or two
    processes on one GPU, on multi-node runs: torchrun sets LOCAL_RANK for this), calls
    torch.cuda.set_device unconditionally (ZeroDivisionError without a GPU) and always asks for
    nccl, which does not exist on CPU. Here: GPU from LOCAL_RANK, gloo when CUDA is absent.

    After torchrun restarted its workers (--max-restarts), env:// initialisation connects to the
    agent's store, which still holds the previous group's keys: the new ranks read the dead ranks'
    addresses and fail (gloo connectFullMesh: connection refused; docs/elastic_restart_repro.py).
    A restarted group initialises under a key prefix of its own (restart_<count>) on that store."""
    from hat_basicsr.utils.resume_point import elastic_restart_count

    def init_dist_pytorch(backend: str = 'nccl', **kwargs: Any) -> None:
        if torch.cuda.is_available():
            local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        elif backend == 'nccl':
            backend = 'gloo'
        restarts = elastic_restart_count()
        if restarts and os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True':
            agent_store = torch.distributed.TCPStore(
                os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), is_master=False
            )
            kwargs.update(
                store=torch.distributed.PrefixStore(f'restart_{restarts}', agent_store),
                rank=int(os.environ['RANK']),
                world_size=int(os.environ['WORLD_SIZE']),
            )
        torch.distributed.init_process_group(backend=backend, **kwargs)

    return init_dist_pytorch


def _fix_model_to_device(original: Callable) -> Callable:
    """BaseModel.model_to_device wraps DDP with device_ids=[torch.cuda.current_device()], which
    fails without a GPU; a CPU module must be wrapped without device_ids."""

    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        if self.opt['dist'] and self.device.type == 'cpu':
            return torch.nn.parallel.DistributedDataParallel(
                net.to(self.device), find_unused_parameters=self.opt.get('find_unused_parameters', False)
            )
        return original(self, net)

    return model_to_device


def _fix_load_resume_state(_original: Callable) -> Callable:
    """basicsr.train.load_resume_state maps the state onto torch.cuda.current_device(), which fails
    without a GPU, and loads it with torch.load's defaults. Here the state BasicSR chooses (with
    --auto_resume the newest `<iter>.state` in experiments/<name>/training_states under the working
    directory, else path.resume_state) loads on the CPU (optimizers move their state to the
    parameters' device on load) with weights_only=True, and one that does not load is a
    CheckpointError naming it. Which state a training of this package resumes is
    hat_basicsr.training_policy's choice."""
    from hat_basicsr.utils.resume_point import load_state, state_iterations

    from basicsr.utils import check_resume

    def load_resume_state(opt: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        path = opt['path'].get('resume_state') or None
        if opt['auto_resume']:
            folder = os.path.join('experiments', opt['name'], 'training_states')
            newest = state_iterations(folder)[:1]
            path = os.path.join(folder, f'{newest[0]}.state') if newest else None
            if path is not None:
                opt['path']['resume_state'] = path
        if path is None:
            return None
        state = load_state(path)
        check_resume(opt, state['iter'])
        return state

    return load_resume_state


def _fix_cuda_prefetcher(original: type) -> Callable:
    """`prefetch_mode: cuda` builds CUDAPrefetcher, which creates a torch.cuda.Stream and fails
    without a GPU (or with num_gpu: 0). It falls back to the CPU prefetcher with a warning; the
    pin_memory that train_pipeline then insists on is only the CUDA prefetcher's concern, so the
    fallback marks it set (the data loader is already built by then)."""
    from basicsr.data.prefetch_dataloader import CPUPrefetcher

    def cuda_prefetcher(loader: Any, opt: Dict[str, Any]) -> Any:
        if torch.cuda.is_available() and opt['num_gpu'] != 0:
            return original(loader, opt)
        logger.warning('prefetch_mode: cuda needs a GPU (num_gpu != 0); using the CPU prefetcher instead.')
        opt['datasets']['train']['pin_memory'] = True
        return CPUPrefetcher(loader)

    return cuda_prefetcher


def shared_lmdb_environment(path: str, **options: Any) -> Any:
    """The process's one environment for the LMDB at `path` (opened with `options` the first time).

    One inherited over fork is closed and reopened: LMDB forbids using an environment in a child
    process, and py-lmdb would otherwise refuse the reopening."""
    import lmdb

    key = os.path.realpath(path)
    owner, environment = _lmdb_environments.get(key, (None, None))
    if environment is not None and owner == os.getpid():
        return environment
    if environment is not None:
        environment.close()
    environment = lmdb.open(path, **options)
    _lmdb_environments[key] = (os.getpid(), environment)
    return environment


def _fix_lmdb_backend(_original: Callable) -> Callable:
    """py-lmdb >= 3.0 refuses to open an environment that is already open in the process, and a
    DataLoader worker forked after its parent opened one inherits that refusal. BasicSR's
    LmdbBackend opens an environment per FileClient, so two datasets on one LMDB (ImageNet training
    and validation on the same database) fail with lmdb.Error. Here environments are shared per
    path within a process (shared_lmdb_environment)."""

    def __init__(
        self,
        db_paths: Any,
        client_keys: Any = 'default',
        readonly: bool = True,
        lock: bool = False,
        readahead: bool = False,
        **kwargs: Any,
    ) -> None:
        client_keys = [client_keys] if isinstance(client_keys, str) else list(client_keys)
        self.db_paths = [str(path) for path in (db_paths if isinstance(db_paths, (list, tuple)) else [db_paths])]
        if len(client_keys) != len(self.db_paths):
            raise ValueError(f'LMDB backend: {len(client_keys)} client_keys for {len(self.db_paths)} db_paths')
        self._client = {
            key: shared_lmdb_environment(path, readonly=readonly, lock=lock, readahead=readahead, **kwargs)
            for key, path in zip(client_keys, self.db_paths)
        }

    return __init__


class SourcedBytes(bytes):
    """The bytes a FileClient read, with `source`: the file, or the LMDB key and database, they came from."""

    source: str


def _fix_file_client_get(original: Callable) -> Callable:
    """FileClient.get returns what the backend read and nothing says from where, so BasicSR's
    datasets fail later in imfrombytes naming no file (see _fix_imfrombytes); an LMDB without the
    key returns None, which np.frombuffer refuses with `TypeError: a bytes-like object is required,
    not 'NoneType'`. Here the bytes carry their source (SourcedBytes), and a missing LMDB key is
    an ImageError naming the key and the database."""
    from hat_basicsr.errors import ImageError

    def get(self, filepath: Any, client_key: str = 'default') -> Any:
        content = original(self, filepath, client_key)
        source = str(filepath)
        if self.backend == 'lmdb':
            database = self.client._client[client_key].path()
            if content is None:
                raise ImageError(f'LMDB {database} has no key {source} (check its meta_info.txt)')
            source = f'{source} of LMDB {database}'
        if not isinstance(content, bytes):
            return content
        content = SourcedBytes(content)
        content.source = source
        return content

    return get


def _fix_imfrombytes(original: Callable) -> Callable:
    """imfrombytes names no file when it cannot decode: OpenCV's None for bytes that are no image
    becomes `'NoneType' object has no attribute 'astype'` (float32=True) or is returned as the
    image (float32=False), and an empty file fails cv2's `!buf.empty()` assertion. From a
    DataLoader worker only the message reaches the user. Here bytes of a FileClient
    (_fix_file_client_get) that cannot be decoded are an ImageError naming where they came from."""
    from hat_basicsr.errors import ImageError

    def imfrombytes(content: Any, flag: str = 'color', float32: bool = False) -> Any:
        source = getattr(content, 'source', None)
        if source is None:
            return original(content, flag, float32)
        if not content:
            raise ImageError(f'cannot decode image {source}: it is empty (0 bytes)')
        try:
            image = original(content, flag, float32)
        except AttributeError:  # float32=True: the None OpenCV returned was converted
            image = None
        if image is None:
            raise ImageError(f'cannot decode image {source} (truncated or corrupt file, or not an image)')
        return image

    return imfrombytes


# BasicSR's checks of dataset folders, list files and crop sizes: module -> functions. Each raises
# an AssertionError or ValueError whose message names the folders, files or sizes.
BASICSR_DATA_CHECKS = {
    'basicsr.data.data_util': (
        'paired_paths_from_lmdb',
        'paired_paths_from_meta_info_file',
        'paired_paths_from_folder',
        'paths_from_lmdb',
    ),
    'basicsr.data.transforms': ('paired_random_crop',),
}


def _raised_in(error: BaseException) -> Any:
    """The code object of the function that raised `error`."""
    frame = error.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    return frame.tb_frame.f_code


def _fix_data_check(original: Callable) -> Callable:
    """BasicSR checks dataset folders, list files and crop sizes with `assert` and ValueError, so a
    user's mistake (LQ and GT folders with different images, an LMDB without `.lmdb`, an LQ smaller
    than the patch) is indistinguishable from a bug and ends in a traceback; a ValueError with two
    arguments prints as a Python tuple. Here what the check itself raises is a DatasetError with its
    message (a UserError: one line); errors of the code it calls keep their type."""
    from hat_basicsr.errors import DatasetError

    def data_check(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except (AssertionError, ValueError) as error:
            if _raised_in(error) is not original.__code__:  # from deeper code: not the check's refusal
                raise
            raise DatasetError(' '.join(map(str, error.args)) or type(error).__name__) from error

    return functools.wraps(original)(data_check)


def _fix_paired_scale_message(original: Callable) -> Callable:
    """PairedImageDataset's training crop (paired_random_crop) refuses a GT that is not scale x its
    LQ with a ValueError whose message prints as a Python tuple and names no file:
    `('Scale mismatches. GT (64, 64) is not 2x ', 'multiplication of LQ (20, 20).')`. Here it is a
    DatasetError naming both files and their sizes (width x height)."""
    from hat_basicsr.errors import DatasetError

    def __getitem__(self, index: int) -> Dict[str, Any]:
        try:
            return original(self, index)
        except ValueError as error:
            match = SCALE_MISMATCH.search(' '.join(map(str, error.args)))
            if match is None:
                raise
            gt_height, gt_width, scale, lq_height, lq_width = match.groups()
            pair = self.paths[index]
            raise DatasetError(
                f'GT {pair["gt_path"]} ({gt_width}x{gt_height}) is not {scale}x its LQ {pair["lq_path"]} '
                f'({lq_width}x{lq_height}): check dataroot_lq and scale'
            ) from error

    return __getitem__


def _fix_realesrgan_image_list(original: Callable) -> Callable:
    """BasicSR's RealESRGANDataset reads its list of images from `meta_info` only and fails without
    one (open(None)); the release's Real-HAT option files name the list `meta_info_file`, and the
    release's own copy of the dataset scans dataroot_gt when no list is given. Here (disk backend):
    meta_info, else meta_info_file, else every image under dataroot_gt."""
    from hat_basicsr.data.imagenet_paired_dataset import gt_image_paths

    def __init__(self, opt: Dict[str, Any]) -> None:
        if opt['io_backend']['type'] == 'lmdb':
            return original(self, opt)
        list_file = opt.get('meta_info') or opt.get('meta_info_file')
        # Without a list, BasicSR's constructor reads an empty one and the scan replaces it.
        original(self, {**opt, 'meta_info': list_file or os.devnull})
        if not list_file:
            self.paths = gt_image_paths(str(opt['dataroot_gt']), None)

    return __init__


def _fix_message_logger_eta(original: Callable) -> Callable:
    """MessageLogger estimates the time left as (total_iter - current_iter - 1) iterations, one too
    few: at the last iteration it logs `eta: -1 day, 23:59:58`. max_iters is raised by one for the
    duration of the call, which makes its count the iterations actually left."""

    def __call__(self, log_vars: Dict[str, Any]) -> None:
        self.max_iters += 1
        try:
            original(self, log_vars)
        finally:
            self.max_iters -= 1

    return __call__


def apply() -> None:
    _provide_torchvision_functional_tensor()
    try:
        import basicsr  # noqa: F401  (imports every module patched below)
    except ModuleNotFoundError as error:
        if error.name != 'basicsr':
            raise
        # `pip install -e .` and `python setup.py develop` install this package but not basicsr
        # (see scripts/install.sh for why it cannot be a plain dependency).
        raise ModuleNotFoundError(
            'basicsr is not installed: run `pip install --no-deps --no-build-isolation basicsr==1.4.2` '
            '(scripts/install.sh installs everything)',
            name='basicsr',
        ) from None
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from basicsr.data.realesrgan_dataset import RealESRGANDataset
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import dist_util, img_util
    from basicsr.utils.file_client import FileClient, LmdbBackend
    from basicsr.utils.logger import MessageLogger

    train = importlib.import_module('basicsr.train')
    patch_once(dist_util, '_init_dist_pytorch', _fix_init_dist_pytorch)
    patch_once(BaseModel, 'model_to_device', _fix_model_to_device)
    patch_once(train, 'load_resume_state', _fix_load_resume_state)
    patch_once(train, 'CUDAPrefetcher', _fix_cuda_prefetcher)
    patch_once(LmdbBackend, '__init__', _fix_lmdb_backend)
    patch_once(FileClient, 'get', _fix_file_client_get)
    patch_once(img_util, 'imfrombytes', _fix_imfrombytes, rebind_in='basicsr')
    patch_once(PairedImageDataset, '__getitem__', _fix_paired_scale_message)
    patch_once(RealESRGANDataset, '__init__', _fix_realesrgan_image_list)
    patch_once(MessageLogger, '__call__', _fix_message_logger_eta)
    for module_name, functions in BASICSR_DATA_CHECKS.items():
        module = importlib.import_module(module_name)
        for function in functions:
            patch_once(module, function, _fix_data_check, rebind_in='basicsr')
