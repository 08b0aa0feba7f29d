"""The release-architecture reference fixtures in tests/fixtures (weights, inputs, outputs)."""

import json
from pathlib import Path
from typing import Dict, List, Tuple

import torch

FIXTURES = Path(__file__).parent / 'fixtures'
NAMES = sorted(path.stem for path in FIXTURES.glob('*.json'))
# Parameter counts of the released variants at x2 / x3 / x4 (REFERENCE.md section 1).
RELEASE_PARAMS = {
    'HAT-S': (9_473_471, 9_658_111, 9_621_183),
    'HAT': (20_624_795, 20_809_435, 20_772_507),
    'HAT-L': (40_698_863, 40_883_503, 40_846_575),
}


def fixture_options(name: str) -> Dict:
    options = dict(json.loads((FIXTURES / f'{name}.json').read_text())['network_g'])
    options.pop('type')
    return options


def fixture_weights_path(name: str) -> Path:
    return FIXTURES / f'{name}.pth'


def fixture_cases(name: str) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    io = torch.load(FIXTURES / f'{name}_io.pt', weights_only=True)
    return list(zip(io['inputs'], io['outputs']))


def fixture_model(name: str, **overrides):
    from hat_basicsr import HAT
    from hat_basicsr.utils.weights import load_weights

    model = HAT(**{**fixture_options(name), **overrides})
    load_weights(model, fixture_weights_path(name))
    return model.eval()
