"""BasicSR's sections of an option file, declared once (see hat_basicsr.utils.option_spec).

BasicSR 1.4.2 reads these keys where it first needs them (basicsr/train.py, utils/options.py,
data/__init__.py, models/base_model.py and sr_model.py, its dataset classes); hat_basicsr's models
add tb_images and keep_checkpoints. hat_basicsr.option_check refuses values these declarations
refuse, and `hat-basicsr schema` publishes them as a JSON Schema. What a declaration cannot say
(gt_size a multiple of scale, requirements that depend on training or testing, restart_weights
counted against restarts) stays code in option_check.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional, Tuple

from hat_basicsr.utils.option_spec import Option, OptionOrWords, PatternSection, Section, section_from_signature


def _folder(name: str, required: bool = False) -> Option:
    return Option(
        name, 'string', required=required, doc='a folder, or an LMDB ending in .lmdb', expected_text='a folder path'
    )


def _positive(name: str, doc: str, required: bool = False) -> Option:
    return Option(name, 'integer', doc=doc, required=required, minimum=1, expected_text='a positive integer')


def required_in(section: Section, names: Tuple[str, ...]) -> Section:
    """`section` with `names` required (the keys a dataset needs only in its train phase)."""
    options = tuple(replace(option, required=True) if option.name in names else option for option in section.options)
    return Section(options, doc=section.doc, closed=section.closed)


TOP_LEVEL = Section(
    (
        Option('name', 'string', required=True, doc='it names the experiment and its folders'),
        Option('model_type', 'string', required=True, doc='it names the model to build'),
        Option(
            'scale',
            'integer',
            required=True,
            minimum=1,
            doc='the upscaling factor (an integer)',
            expected_text='a positive integer',
        ),
        OptionOrWords(
            'num_gpu',
            'integer',
            words=('auto',),
            required=True,
            minimum=0,
            doc='auto, or the number of GPUs (0 for CPU)',
            expected_text="'auto' or an integer >= 0 (0: CPU)",
        ),
        Option('manual_seed', ('integer', 'null'), doc='the random seed', expected_text='an integer'),
        Option(
            'gt_size',
            'integer',
            above=0,
            doc='the HR patch the Real-HAT models crop their synthesised pairs to',
            expected_text='a positive integer multiple of scale (the GT patch size)',
        ),
        Option(
            'datasets',
            'mapping',
            required=True,
            doc='the datasets to train or test on',
            expected_text='a mapping of datasets (train, val, test_1, ...)',
        ),
        Option(
            'network_g',
            'mapping',
            required=True,
            doc='the network to build',
            expected_text='a mapping of network options',
        ),
        Option(
            'network_d', 'mapping', doc='the discriminator of a GAN model', expected_text='a mapping of network options'
        ),
        Option(
            'path',
            'mapping',
            required=True,
            doc='BasicSR reads its folders and weights from it',
            expected_text='a mapping of paths',
        ),
        Option('train', 'mapping', doc='training reads it', expected_text='a mapping of options'),
        Option(
            'val',
            ('mapping', 'null'),
            doc='validation or testing reads it',
            expected_text='a mapping of validation options',
        ),
        Option('logger', 'mapping', doc='training reads it', expected_text='a mapping of options'),
        Option('dist_params', 'mapping', doc='distributed training: backend and port'),
        Option('acceleration', ('mapping', 'null'), doc="HAT's speed and memory switches (HATModel)"),
        Option('tile', ('mapping', 'null'), doc='tiled inference (HATModel)'),
    ),
    doc='A BasicSR option file. Open: a model reads its own top-level keys (the Real-HAT degradation).',
    closed=False,
)

PATH = PatternSection(
    (
        Option('experiments_root', 'string', doc='set by BasicSR from name'),
        Option('results_root', 'string', doc='set by BasicSR from name'),
        Option('models', 'string', doc='set by BasicSR from name'),
        Option('training_states', 'string', doc='set by BasicSR from name'),
        Option('log', 'string', doc='set by BasicSR from name'),
        Option('visualization', 'string', doc='set by BasicSR from name'),
        Option('resume_state', ('string', 'null'), doc='a training state (.state) to resume from'),
        Option('ignore_resume_networks', ('strings', 'null'), doc='networks (network_g, ...) not loaded when resuming'),
    ),
    patterns=(
        Option(r'pretrain_network_\w+', ('string', 'null'), doc='weights to start the network from'),
        Option(r'strict_load_\w+', 'boolean', doc='whether every weight must match the network'),
        Option(r'param_key_\w+', ('string', 'null'), doc='the checkpoint entry to load (params, params_ema)'),
    ),
    doc='Folders and weights. Any other key would become a folder named after its value.',
)

OPTIMIZER = Section(
    (
        Option(
            'type',
            'string',
            required=True,
            choices=('Adam',),
            doc="one of ['Adam']",
            expected_text="one of ['Adam'] (what BasicSR 1.4.2 builds)",
        ),
        Option('lr', 'number', required=True, above=0, doc='the learning rate', expected_text='a positive number'),
        Option(
            'betas',
            'numbers',
            length=2,
            minimum=0,
            maximum=1,
            doc="Adam's decay rates",
            expected_text='two numbers in [0, 1)',
        ),
        Option('weight_decay', 'number', minimum=0, expected_text='a number >= 0'),
    ),
    doc='The optimizer; the other keys are arguments of its torch.optim class.',
    closed=False,
)

SCHEDULERS = {
    'MultiStepLR': 'MultiStepRestartLR',
    'MultiStepRestartLR': 'MultiStepRestartLR',
    'CosineAnnealingRestartLR': 'CosineAnnealingRestartLR',
}
SCHEDULER = Section(
    (
        Option('type', 'string', required=True, choices=tuple(SCHEDULERS), doc=f'one of {list(SCHEDULERS)}'),
        Option('milestones', 'integers', minimum=0, expected_text='a list of integers >= 0 (iterations)'),
        Option('restarts', 'integers', minimum=0, expected_text='a list of integers >= 0 (iterations)'),
        Option('periods', 'integers', minimum=1, expected_text='a list of integers >= 1 (iterations)'),
        Option('gamma', 'number', above=0, expected_text='a positive number'),
        Option('restart_weights', 'numbers', doc='one weight for each of restarts (periods for cosine)'),
    ),
    doc="The learning-rate schedule; the other keys are arguments of BasicSR's scheduler class.",
    closed=False,
)

LOSS_KEYS = ('pixel_opt', 'perceptual_opt', 'gan_opt', 'ldl_opt', 'feature_matching_opt')
TRAIN = Section(
    (
        _positive('total_iter', 'the number of iterations to train', required=True),
        Option(
            'warmup_iter',
            'integer',
            minimum=-1,
            doc='linear warm-up iterations (-1: none)',
            expected_text='an integer >= -1',
        ),
        Option(
            'ema_decay',
            'number',
            minimum=0,
            maximum=1,
            doc='the weight of the old EMA weights (0: no EMA)',
            expected_text='a number in (0, 1] (the weight of the old EMA weights), or 0 for no EMA',
        ),
        Option(
            'optim_g',
            'mapping',
            required=True,
            doc='e.g. {type: Adam, lr: 2.0e-4}',
            expected_text='a mapping of optimizer options',
        ),
        Option('optim_d', 'mapping', doc='the optimizer of network_d', expected_text='a mapping of optimizer options'),
        Option(
            'scheduler',
            'mapping',
            required=True,
            doc='e.g. {type: MultiStepLR, milestones: [250000], gamma: 0.5}',
            expected_text='a mapping of scheduler options',
        ),
        *(
            Option(
                key,
                ('mapping', 'null'),
                doc='a registered loss and its arguments',
                expected_text='a mapping of loss options',
            )
            for key in LOSS_KEYS
        ),
        _positive('net_d_iters', 'update network_d every net_d_iters iterations'),
        Option(
            'net_d_init_iters',
            'integer',
            minimum=0,
            doc='iterations training network_d alone',
            expected_text='an integer >= 0',
        ),
        *(
            Option(key, 'any', doc="read by BasicSR's other models")
            for key in (
                'net_d_reg_every',
                'net_g_reg_every',
                'mixing_prob',
                'path_batch_shrink',
                'path_reg_weight',
                'dcn_lr_mul',
                'flow_lr_mul',
                'fix_flow',
                'lr_flow',
                'tsa_iter',
            )
        ),
    ),
    doc='Training. Open: a custom model may read other keys (the checker warns about them).',
    closed=False,
)

METRIC = Section(
    (
        Option('type', 'string', required=True, doc='it names the metric to build'),
        Option(
            'crop_border', 'integer', minimum=0, doc='pixels left out at each border', expected_text='an integer >= 0'
        ),
        Option('test_y_channel', 'boolean', doc='score the Y channel of YCbCr'),
        Option('better', 'string', choices=('higher', 'lower'), doc='which way the metric improves'),
    ),
    doc="A metric; the other keys are arguments of BasicSR's metric function.",
    closed=False,
)

VAL = Section(
    (
        _positive('val_freq', 'validate every val_freq iterations'),
        Option('save_img', 'boolean', required=True, doc='whether to save the super-resolved images'),
        Option('suffix', ('string', 'null'), doc='added to the names of the saved images'),
        Option(
            'metrics',
            ('mapping', 'null'),
            doc='name: {type: calculate_psnr, ...}',
            expected_text='a mapping of metrics',
        ),
        Option('pbar', 'boolean', doc='show a progress bar'),
        Option(
            'tb_images',
            'integer',
            minimum=0,
            doc='images shown in TensorBoard per validation',
            expected_text='an integer >= 0',
        ),
        Option('center_frame_only', 'boolean', doc="BasicSR's video models"),
        Option('flip_seq', 'boolean', doc="BasicSR's video models"),
        Option(
            'num_val_samples', 'integer', minimum=1, doc="BasicSR's StyleGAN2 model", expected_text='a positive integer'
        ),
    ),
    doc='Validation during training, or the scores of testing.',
)

WANDB = Section(
    (
        Option('project', ('string', 'null'), doc='the Weights & Biases project (~: no wandb)'),
        Option('resume_id', ('string', 'null'), doc='the run to resume'),
    ),
    closed=False,
)
LOGGER = Section(
    (
        _positive('print_freq', 'log every print_freq iterations', required=True),
        _positive('save_checkpoint_freq', 'save a checkpoint every save_checkpoint_freq iterations', required=True),
        Option(
            'keep_checkpoints',
            ('integer', 'null'),
            minimum=1,
            doc='the newest checkpoints kept (~: all)',
            expected_text='a positive integer, or ~ to keep every checkpoint',
        ),
        Option('use_tb_logger', 'boolean', doc='write TensorBoard logs'),
        Option('wandb', ('mapping', 'null'), doc='Weights & Biases: project and resume_id'),
    ),
    doc='Logging and checkpoints of training.',
)

DIST_PARAMS = Section(
    (
        Option('backend', 'string', doc='the torch.distributed backend (nccl)'),
        Option('port', 'integer', minimum=1, maximum=65535, doc='the port of the rendezvous'),
    ),
    closed=False,
)

IO_BACKEND = Section(
    (Option('type', 'string', required=True, choices=('disk', 'lmdb', 'memcached'), doc='how the images are read'),),
    doc='The file client; lmdb and memcached take their own keys.',
    closed=False,
)

# The keys BasicSR's data/__init__.py and every dataset read.
DATASET = Section(
    (
        Option('name', 'string', required=True, doc='BasicSR logs datasets by name'),
        Option('type', 'string', required=True, doc='it names the dataset to build'),
        Option(
            'io_backend',
            'mapping',
            required=True,
            doc='e.g. {type: disk} or {type: lmdb}',
            expected_text='a mapping of io_backend options',
        ),
        Option('phase', 'string', doc='set by BasicSR from the dataset key'),
        _folder('dataroot_gt'),
        _folder('dataroot_lq'),
        _positive('batch_size_per_gpu', 'the training batch per GPU'),
        Option(
            'num_worker_per_gpu',
            'integer',
            minimum=0,
            doc='DataLoader workers per GPU (0: none)',
            expected_text='an integer >= 0',
        ),
        _positive('dataset_enlarge_ratio', 'repeat the dataset in an epoch'),
        Option(
            'prefetch_mode',
            ('string', 'null'),
            choices=(None, 'cpu', 'cuda'),
            doc='prefetch batches',
            expected_text='~ (none), cpu or cuda',
        ),
        _positive('num_prefetch_queue', 'batches prefetched (prefetch_mode cuda)'),
        Option('pin_memory', 'boolean', doc='DataLoader pin_memory'),
        Option('persistent_workers', 'boolean', doc='DataLoader persistent_workers'),
        Option('use_hflip', 'boolean', doc='random horizontal flips'),
        Option('use_rot', 'boolean', doc='random rotations and vertical flips'),
        Option('use_shuffle', 'boolean', doc='shuffle the training set'),
        Option('scale', 'integer', minimum=1, doc='set by BasicSR from scale', expected_text='a positive integer'),
    ),
    doc='A dataset. Open: each dataset class reads its own keys.',
    closed=False,
)
# The keys a dataset reads in its train phase only.
TRAINING_DATASET_KEYS = ('batch_size_per_gpu', 'num_worker_per_gpu')

_META_INFO_FILE = Option('meta_info_file', 'string', doc='a list file of the images')
_GT_SIZE = Option(
    'gt_size',
    'integer',
    above=0,
    doc='the GT patch cropped in training',
    expected_text='a positive integer (the GT patch size)',
)
_KERNEL_SIZE = Option('blur_kernel_size', 'integer', minimum=1, expected_text='a positive integer')
_NUMBERS = ('kernel_prob', 'blur_sigma', 'betag_range', 'betap_range')
_REAL_ESRGAN_KERNELS = tuple(
    option
    for suffix in ('', '2')
    for option in (
        replace(_KERNEL_SIZE, name=f'blur_kernel_size{suffix}'),
        Option(f'kernel_list{suffix}', 'strings', required=True),
        *(Option(f'{name}{suffix}', 'numbers', required=True) for name in _NUMBERS),
        Option(f'sinc_prob{suffix}', 'number', required=True, minimum=0, maximum=1),
    )
)

# BasicSR's dataset classes used here, by name; the keys in DATASET_TRAINING are required in the train phase.
DATASETS: Dict[str, Section] = {
    'PairedImageDataset': Section(
        (
            _folder('dataroot_gt', required=True),
            _folder('dataroot_lq', required=True),
            _META_INFO_FILE,
            Option('filename_tmpl', 'string', doc="how an LQ file is named from its GT name ('{}')"),
            _GT_SIZE,
            Option('use_hflip', 'boolean'),
            Option('use_rot', 'boolean'),
            Option('mean', 'numbers'),
            Option('std', 'numbers'),
        ),
        doc='Pairs of GT and LQ images.',
        closed=False,
    ),
    'SingleImageDataset': Section(
        (_folder('dataroot_lq', required=True), _META_INFO_FILE, Option('mean', 'numbers'), Option('std', 'numbers')),
        doc='LQ images without GT.',
        closed=False,
    ),
    'RealESRGANDataset': Section(
        (
            _folder('dataroot_gt', required=True),
            Option('meta_info', 'string', doc='a list file of the GT images'),
            Option('use_hflip', 'boolean', required=True),
            Option('use_rot', 'boolean', required=True),
            *(replace(option, required=True) for option in _REAL_ESRGAN_KERNELS),
            Option('final_sinc_prob', 'number', required=True, minimum=0, maximum=1),
            _GT_SIZE,
        ),
        doc='GT images and the blur kernels of the Real-ESRGAN degradation.',
        closed=False,
    ),
}
DATASET_TRAINING: Dict[str, Tuple[str, ...]] = {'PairedImageDataset': ('gt_size', 'use_hflip', 'use_rot')}


def dataset_section(dataset_class: type) -> Optional[Section]:
    """The keys a dataset class declares: BasicSR's here (DATASETS), this package's its own OPTIONS."""
    return DATASETS.get(dataset_class.__name__) or getattr(dataset_class, 'OPTIONS', None)


def optimizer_arguments(kind: str) -> Section:
    """The arguments of torch.optim's `kind` an option file may set (BasicSR passes the parameters)."""
    import torch

    return section_from_signature(getattr(torch.optim, kind), ('params',))


def scheduler_arguments(kind: str) -> Section:
    """The arguments of the BasicSR scheduler `kind` builds an option file may set."""
    from basicsr.models import lr_scheduler

    return section_from_signature(getattr(lr_scheduler, SCHEDULERS[kind]), ('optimizer', 'last_epoch'))
