"""What every model of this package changes in BasicSR's SRModel, none of it specific to HAT.

- CPU support: `num_gpu` other than 0 without CUDA is refused up front.
- Checkpoints that a kill cannot corrupt (atomic saves; temporaries left by a killed save are
  removed at start) and that resume with torch.load(weights_only=True) (plain values only).
- Weights loaded through hat_basicsr.utils.weights: any checkpoint layout, wrapper prefixes,
  safetensors, and an error listing the mismatch.
- get_bare_model also unwraps torch.compile.
- A SIGTERM stops training at the next iteration boundary with a saved state; a non-finite loss
  or weights stop it before anything non-finite is saved.
- Validation refuses LQ/GT pairs of another scale, which BasicSR would silently crop.
- With a TensorBoard logger, each validation writes its first `val.tb_images` images (bicubic LQ |
  SR | GT side by side) to it.
- A training's log starts with its plan (hat_basicsr.training_plan, as `hat-basicsr plan` prints it).
- `logger.keep_checkpoints: N` deletes numbered checkpoints beyond the newest N after each save
  (hat_basicsr.utils.checkpoint_retention).
- Validation under DDP (training and hat_basicsr.test with --launcher pytorch) splits the images
  over the ranks and gathers their metric values; BasicSR's runs every image on rank 0 while the
  other ranks wait.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from hat_basicsr.errors import CheckpointError, NonFiniteTrainingError, OptionFileError, TrainingStopped
from hat_basicsr.training_plan import format_plan, make_plan
from hat_basicsr.utils.checkpoint_retention import prune_checkpoints
from hat_basicsr.utils.files import remove_stale_temporaries
from hat_basicsr.utils.sharding import Shard
from hat_basicsr.utils.training_stop import progress
from hat_basicsr.utils.weights import atomic_save, load_weights, read_checkpoint

from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.dist_util import master_only


def _image_size(path: Any) -> Optional[Tuple[int, int]]:
    """(width, height) from the file's header; None for what is not an image file (an LMDB key)."""
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None


def check_pair_scale(dataset: Any, scale: int) -> None:
    """Outside training BasicSR's PairedImageDataset crops the GT to scale x LQ without a word, so
    LQ images made for another scale would be scored against a corner of their GT. An OptionFileError
    names the first such pair (datasets of files only; LMDB keys are not checked)."""
    for pair in getattr(dataset, 'paths', None) or []:
        if not isinstance(pair, Mapping) or 'gt_path' not in pair or 'lq_path' not in pair:
            return
        gt, lq = _image_size(pair['gt_path']), _image_size(pair['lq_path'])
        if gt is None or lq is None:
            continue
        if not all(low * scale <= high < (low + 1) * scale for high, low in zip(gt, lq)):
            raise OptionFileError(
                f'{pair["lq_path"]} ({lq[0]}x{lq[1]}) is not the x{scale} LQ of {pair["gt_path"]} '
                f'({gt[0]}x{gt[1]}): check dataroot_lq and scale'
            )


def _plain(value: Any) -> Any:
    """Numpy scalars/arrays -> Python values/tensors, recursively: torch.load(weights_only=True)
    refuses numpy objects, and a state it refuses cannot resume."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, Mapping):
        return type(value)({key: _plain(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


# Validation images written to TensorBoard per validation dataset when `val.tb_images` is not set.
DEFAULT_TB_IMAGES = 4


def side_by_side(visuals: Mapping[str, Tensor]) -> Tensor:
    """One CHW image in [0, 1]: the LQ upscaled bicubically to the SR's size | SR | GT (when there
    is one), all cropped to the smallest height and width among them."""
    result = visuals['result'][:1].float()
    upscaled = F.interpolate(visuals['lq'][:1].float(), size=result.shape[-2:], mode='bicubic', align_corners=False)
    panels = [upscaled, result] + ([visuals['gt'][:1].float()] if 'gt' in visuals else [])
    height, width = min(panel.shape[-2] for panel in panels), min(panel.shape[-1] for panel in panels)
    return torch.cat([panel[..., :height, :width] for panel in panels], dim=-1)[0].clamp(0, 1)


def _image_names(dataset: Any, count: int) -> List[str]:
    """Names for the first `count` validation images: the LQ file names where the dataset lists
    them (BasicSR's paired datasets), else their indices."""
    paths = getattr(dataset, 'paths', None) or []
    names = []
    for index in range(count):
        entry = paths[index] if index < len(paths) else None
        path = entry.get('lq_path') if isinstance(entry, Mapping) else entry
        names.append(os.path.splitext(os.path.basename(path))[0] if isinstance(path, str) else str(index))
    return names


def _newest_state() -> str:
    if progress.saved_iteration is None:
        return 'no training state saved yet'
    return f'newest training state: iteration {progress.saved_iteration}'


class BasicSRFixesMixin:
    """The changes listed in the module docstring. Put it before SRModel (or the BasicSR model
    class used) in the bases; it chains to it through super()."""

    opt: Dict[str, Any]
    device: torch.device
    is_train: bool
    log_dict: Dict[str, float]
    optimizers: List[torch.optim.Optimizer]
    schedulers: List[Any]

    def __init__(self, opt: Dict[str, Any]) -> None:
        if opt['num_gpu'] != 0 and not torch.cuda.is_available():
            raise OptionFileError(
                f'num_gpu: {opt["num_gpu"]} but CUDA is not available; use num_gpu: 0 or auto for CPU'
            )
        super().__init__(opt)
        if self.is_train and opt.get('rank', 0) == 0:
            for folder in ('models', 'training_states'):
                for path in remove_stale_temporaries(opt['path'][folder]):
                    get_root_logger().info(f'Removed {path}, left by a save that was killed.')
        if self.is_train and opt.get('rank', 0) == 0 and 'root_path' in opt:
            self._log_plan()
        self._checked_datasets: set = set()
        self._tb_visuals: Optional[List[Dict[str, Tensor]]] = None

    def _log_plan(self) -> None:
        """The block `hat-basicsr plan` prints, for this run's world size and folders. Only under
        BasicSR's train_pipeline (which sets root_path), after the option file and its data were
        checked; a model built elsewhere (scripts, tests) may hold partial options."""
        opt = self.opt
        experiments = os.path.dirname(opt['path'].get('experiments_root', opt['path']['models']))
        plan = make_plan(opt, opt.get('world_size', 1), experiments, opt['num_gpu'])
        get_root_logger().info('Training plan (hat-basicsr plan):\n\t' + '\n\t'.join(format_plan(plan)))

    def get_bare_model(self, net: nn.Module) -> nn.Module:
        """Also unwrap torch.compile (`_orig_mod`), in any order with DDP/DataParallel, so EMA
        updates, checkpoints (no `_orig_mod.` keys) and inference see the plain network."""
        while True:
            unwrapped = super().get_bare_model(net)
            unwrapped = getattr(unwrapped, '_orig_mod', unwrapped)
            if unwrapped is net:
                return net
            net = unwrapped

    def optimize_parameters(self, current_iter: int) -> None:
        super().optimize_parameters(current_iter)
        self.stop_on_non_finite_loss(current_iter)

    def stop_on_non_finite_loss(self, current_iter: int) -> None:
        """Raise NonFiniteTrainingError when a logged loss of this step is NaN or infinite (the
        losses are already Python floats, so checking costs nothing); call after each step."""
        non_finite = [f'{name} = {value}' for name, value in self.log_dict.items() if not math.isfinite(value)]
        if non_finite:
            raise NonFiniteTrainingError(
                f'training diverged at iteration {current_iter}: {", ".join(non_finite)}; '
                f'stopped without saving it ({_newest_state()}); lower the learning rate '
                'or check the data and the loss options'
            )

    def resume_training(self, resume_state: Dict[str, Any]) -> None:
        super().resume_training(resume_state)
        progress.epoch = resume_state['epoch']
        progress.iteration = progress.saved_iteration = resume_state['iter']

    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        """BasicSR's loop calls this first in every iteration, before anything of it has changed:
        the boundary where a stop requested by SIGTERM saves the finished iteration and raises
        TrainingStopped."""
        if self._stop_requested():
            self._stop_after(current_iter - 1)
        progress.iteration = current_iter
        super().update_learning_rate(current_iter, warmup_iter)

    def _stop_requested(self) -> bool:
        """Whether any rank got SIGTERM: torchrun signals each rank at its own moment, and all must
        stop at the same boundary or the others would wait for it in the next collective."""
        requested = progress.stop_requested
        if self.opt['dist']:
            flag = torch.tensor(float(requested), device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
        return requested

    def _stop_after(self, finished_iter: int) -> None:
        """Save models and training state of `finished_iter` (unless saved already) and raise
        TrainingStopped. The epoch saved is the newest BasicSR reported: on resume it only seeds
        the sampler's shuffle and BasicSR restarts that epoch, and a lower one never ends a run
        early."""
        if finished_iter == 0:
            raise TrainingStopped('stopped by SIGTERM before the first iteration; nothing to save')
        if progress.saved_iteration != finished_iter:
            self.save(progress.epoch, finished_iter)
        state = os.path.join(self.opt['path']['training_states'], f'{finished_iter}.state')
        raise TrainingStopped(
            f'stopped by SIGTERM after iteration {finished_iter}; saved {state}; resume with --auto_resume'
        )

    def validation(self, dataloader, current_iter: Union[int, str], tb_logger, save_img: bool) -> None:
        """Refuse LQ/GT pairs of another scale first (see check_pair_scale), once per dataset; with a
        TensorBoard logger, write the first `val.tb_images` images after (see get_current_visuals).

        BasicSR's train loop ends with its counter past total_iter (one more per epoch it starts
        without training), and its final validation labelled results and images with that count
        (`@ 62 iter` after 60 iterations); it is the model of iteration total_iter."""
        if id(dataloader.dataset) not in self._checked_datasets:
            check_pair_scale(dataloader.dataset, self.opt['scale'])
            self._checked_datasets.add(id(dataloader.dataset))
        if self.is_train and isinstance(current_iter, int):
            current_iter = min(current_iter, int(self.opt['train']['total_iter']))
        self._tb_visuals = [] if tb_logger is not None and self._tb_image_count() > 0 else None
        try:
            super().validation(dataloader, current_iter, tb_logger, save_img)
            captured = self._tb_visuals or []
        finally:
            self._tb_visuals = None
        dataset_name = dataloader.dataset.opt['name']
        for name, visuals in zip(_image_names(dataloader.dataset, len(captured)), captured):
            tb_logger.add_image(f'val_images/{dataset_name}/{name}', side_by_side(visuals), current_iter)

    def _tb_image_count(self) -> int:
        return int(self.opt['val'].get('tb_images', DEFAULT_TB_IMAGES))

    def get_current_visuals(self) -> Dict[str, Tensor]:
        """BasicSR's validation calls this once per image, with LQ, SR and GT on the CPU: during a
        validation that writes to TensorBoard, the first `val.tb_images` are kept for it."""
        visuals = super().get_current_visuals()
        if self._tb_visuals is not None and len(self._tb_visuals) < self._tb_image_count():
            self._tb_visuals.append(visuals)
        return visuals

    def _log_validation_metric_values(self, current_iter: Union[int, str], dataset_name: str, tb_logger) -> None:
        """A test run has no best-so-far: BasicSR logged `Best: <value> @ <run name> iter` (the test
        pipeline passes the run's name as current_iter). Testing logs the values only."""
        if self.is_train:
            super()._log_validation_metric_values(current_iter, dataset_name, tb_logger)
            return
        values = ''.join(f'\t # {metric}: {value:.4f}\n' for metric, value in self.metric_results.items())
        get_root_logger().info(f'Validation {dataset_name}\n{values}')

    def dist_validation(self, dataloader: DataLoader, current_iter: Any, tb_logger: Any, save_img: bool) -> None:
        """Validate this rank's share of the images (every world_size-th dataset index); the
        metric values of all shares are gathered in nondist_validation. Each image is saved by
        the rank that computed it, so once."""
        share = Shard(self.opt['rank'], self.opt['world_size']).select(range(len(dataloader.dataset)))
        own_images = DataLoader(
            dataloader.dataset,
            batch_size=1,
            sampler=share,
            num_workers=dataloader.num_workers,
            pin_memory=dataloader.pin_memory,
        )
        self.nondist_validation(own_images, current_iter, tb_logger, save_img)

    def nondist_validation(self, dataloader: DataLoader, current_iter: Any, tb_logger: Any, save_img: bool) -> None:
        """SRModel's validation (same images saved, same metrics, best values and log), keeping
        each image's metric values by dataset index. Under DDP the loader holds this rank's share
        (see dist_validation) and the values of all ranks are gathered; the mean is summed in
        index order as one process sums it, so the figures equal a single process's exactly."""
        dataset_name = dataloader.dataset.opt['name']
        metrics = self.opt['val'].get('metrics')
        if metrics:
            self._initialize_best_metric_results(dataset_name)
        show_progress = self.opt['val'].get('pbar', False) and self.opt.get('rank', 0) == 0
        values_by_index = {}
        for index, data in zip(tqdm(list(dataloader.sampler), unit='image', disable=not show_progress), dataloader):
            values_by_index[index] = self._validate_image(data, current_iter, dataset_name, save_img)
        if self.opt['dist']:
            shares: List[Optional[Dict[int, Dict[str, float]]]] = [None] * self.opt['world_size']
            torch.distributed.all_gather_object(shares, values_by_index)
            values_by_index = {index: values for share in shares for index, values in share.items()}
        if not metrics:
            return
        self.metric_results = {name: 0 for name in metrics}
        for index in sorted(values_by_index):
            for name, value in values_by_index[index].items():
                self.metric_results[name] += value
        for name in metrics:
            self.metric_results[name] /= len(values_by_index)
            self._update_best_metric_result(dataset_name, name, self.metric_results[name], current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def _validate_image(
        self, data: Dict[str, Any], current_iter: Any, dataset_name: str, save_img: bool
    ) -> Dict[str, float]:
        """Upscale one validation image, save it where SRModel saves it, and return its metric values."""
        self.feed_data(data)
        self.test()
        visuals = self.get_current_visuals()
        images = {'img': tensor2img([visuals['result']])}
        if 'gt' in visuals:
            images['img2'] = tensor2img([visuals['gt']])
            del self.gt
        del self.lq, self.output
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if save_img:
            name = os.path.splitext(os.path.basename(data['lq_path'][0]))[0]
            if self.opt['is_train']:
                path = os.path.join(self.opt['path']['visualization'], name, f'{name}_{current_iter}.png')
            else:
                suffix = self.opt['val'].get('suffix') or self.opt['name']
                path = os.path.join(self.opt['path']['visualization'], dataset_name, f'{name}_{suffix}.png')
            imwrite(images['img'], path)
        metrics = self.opt['val'].get('metrics') or {}
        return {name: calculate_metric(images, options) for name, options in metrics.items()}

    def load_network(
        self, net: nn.Module, load_path: str, strict: bool = True, param_key: Optional[str] = 'params'
    ) -> None:
        """Load through load_weights: any checkpoint layout, wrapper prefixes, safetensors, and an
        error listing the mismatch. A missing `param_key` falls back to the other weights in the
        file (as BasicSR does for params_ema -> params), e.g. released files hold only params_ema."""
        checkpoint = read_checkpoint(load_path)
        if param_key not in checkpoint:
            get_root_logger().info(f"{load_path} has no '{param_key}'; loading the weights it has.")
            param_key = 'auto'
        try:
            report = load_weights(self.get_bare_model(net), checkpoint, strict, param_key)
        except CheckpointError as error:
            raise type(error)(f'{load_path}: {error}') from error
        skipped = sum(map(len, report.values()))
        get_root_logger().info(
            f'Loaded {load_path} [{param_key}] into {type(net).__name__}'
            + (f' ({skipped} entries skipped, strict=False)' if skipped else '')
        )

    def save(self, epoch: int, current_iter: int) -> None:
        """BasicSR's save (networks, then training state), then the retention of
        `logger.keep_checkpoints`, once both files of this save are written."""
        super().save(epoch, current_iter)
        keep = self.opt.get('logger', {}).get('keep_checkpoints')
        if keep is not None and current_iter != -1:
            self._prune_checkpoints(current_iter, int(keep))

    @master_only
    def _prune_checkpoints(self, current_iter: int, keep: int) -> None:
        deleted = prune_checkpoints(self.opt['path']['models'], self.opt['path']['training_states'], current_iter, keep)
        if deleted:
            get_root_logger().info(
                f'Deleted {", ".join(path.name for path in deleted)} (logger.keep_checkpoints: {keep}).'
            )

    @master_only
    def save_network(
        self,
        net: Union[nn.Module, List[nn.Module]],
        net_label: str,
        current_iter: int,
        param_key: Union[str, List[str]] = 'params',
    ) -> None:
        """Like BaseModel.save_network (bare, CPU, un-prefixed state dicts) but written atomically:
        a kill mid-save leaves the previous file intact, never a truncated one."""
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'{len(nets)} networks but {len(keys)} param keys')
        checkpoint = {
            key: {name: tensor.detach().cpu() for name, tensor in self.get_bare_model(n).state_dict().items()}
            for n, key in zip(nets, keys)
        }
        label = 'latest' if current_iter == -1 else current_iter
        path = os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        non_finite = [
            f'{key}.{name}'
            for key, params in checkpoint.items()
            for name, tensor in params.items()
            if tensor.is_floating_point() and not torch.isfinite(tensor).all()
        ]
        if non_finite:
            iteration = progress.iteration if current_iter == -1 else current_iter
            raise NonFiniteTrainingError(
                f'training diverged at iteration {iteration}: non-finite weights in '
                f'{len(non_finite)} tensor(s) of {net_label} (first: {non_finite[0]}); '
                f'{path} not written ({_newest_state()})'
            )
        atomic_save(checkpoint, path)

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """Like BaseModel.save_training_state, atomically and with plain values only."""
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [optimizer.state_dict() for optimizer in self.optimizers],
            'schedulers': [scheduler.state_dict() for scheduler in self.schedulers],
        }
        atomic_save(_plain(state), os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))
        progress.epoch, progress.saved_iteration = epoch, current_iter
