"""hat-basicsr: the HAT super-resolution transformer as a BasicSR 1.4.2 plugin."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
exec((ROOT / 'hat_basicsr' / 'version.py').read_text(), version)

# basicsr==1.4.2 itself is installed by scripts/install.sh (--no-deps, --no-build-isolation):
# its declared requirements include `tb-nightly`, which PyPI no longer serves, so listing it
# here would make every resolve fail. These are its real runtime requirements on today's stack.
BASICSR_RUNTIME = [
    'addict', 'future', 'lmdb', 'numpy>=1.26', 'opencv-python-headless', 'Pillow', 'pyyaml',
    'requests', 'scikit-image', 'scipy', 'tensorboard', 'torch>=2.6', 'torchvision>=0.21', 'tqdm',
    'yapf'
]
# ONNX export (torch's dynamo exporter needs onnxscript) and the onnxruntime backend of `upscale`.
ONNX = ['onnx>=1.17', 'onnxruntime>=1.20', 'onnxscript>=0.2']

setup(
    name='hat-basicsr',
    version=version['__version__'],
    description='HAT (Hybrid Attention Transformer) image super-resolution as a BasicSR plugin',
    long_description=(ROOT / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['hat_basicsr', 'hat_basicsr.*']),
    install_requires=BASICSR_RUNTIME + ['einops>=0.7', 'safetensors>=0.4'],
    extras_require={
        'onnx': ONNX,
        'test': ['pytest>=8', 'spandrel==0.4.2'] + ONNX,
    },
    entry_points={'console_scripts': ['hat-basicsr=hat_basicsr.cli:main']},
    classifiers=[
        'Programming Language :: Python :: 3.11',
        'License :: OSI Approved :: Apache Software License',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
