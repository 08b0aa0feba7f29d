"""Using hat_basicsr from a host BasicSR repository: import order, re-imports, name clashes."""

import subprocess
import sys
import textwrap

import pytest

from hat_basicsr.errors import RegistryClashError
from hat_basicsr.utils.registration import register_once

from basicsr.utils.registry import Registry

HOST_OPTIONS = textwrap.dedent("""\
    network_g:
      type: HAT
      upscale: 2
      in_chans: 3
      img_size: 64
      window_size: 8
      embed_dim: 24
      depths: [1]
      num_heads: [4]
      compress_ratio: 3
      squeeze_factor: 8
      mlp_ratio: 2
      upsampler: pixelshuffle
      resi_connection: 1conv
    """)


# What a host repository that made basicsr importable on its own would run before importing it.
HOST_TORCHVISION_FIX = """import sys, types
from torchvision.transforms import functional
shim = types.ModuleType('torchvision.transforms.functional_tensor')
shim.rgb_to_grayscale = functional.rgb_to_grayscale
sys.modules[shim.__name__] = shim"""


def run_host_script(tmp_path, script: str) -> subprocess.CompletedProcess:
    (tmp_path / 'options.yml').write_text(HOST_OPTIONS)
    script = textwrap.dedent(script).replace('{HOST_TORCHVISION_FIX}', HOST_TORCHVISION_FIX)
    (tmp_path / 'host_train.py').write_text(script)
    return subprocess.run([sys.executable, 'host_train.py'], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_host_repo_builds_hat_from_yaml(tmp_path):
    result = run_host_script(
        tmp_path,
        """\
        import hat_basicsr
        import hat_basicsr  # a second import is harmless
        import basicsr, torch, yaml
        from basicsr.archs import build_network
        opt = yaml.safe_load(open('options.yml'))
        net = build_network(opt['network_g']).eval()
        with torch.no_grad():
            print(type(net).__module__, tuple(net(torch.rand(1, 3, 10, 13)).shape))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert 'hat_basicsr.archs.hat_arch (1, 3, 20, 26)' in result.stdout


def test_import_after_basicsr_is_fine(tmp_path):
    # A host that fixed torchvision itself imports basicsr before us.
    result = run_host_script(
        tmp_path,
        """\
        {HOST_TORCHVISION_FIX}
        import basicsr
        import hat_basicsr
        from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
        print(ARCH_REGISTRY.get('HAT').__module__)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert 'hat_basicsr.archs.hat_arch' in result.stdout


def test_host_repo_with_its_own_hat_gets_an_explanation(tmp_path):
    result = run_host_script(
        tmp_path,
        """\
        {HOST_TORCHVISION_FIX}
        from basicsr.utils.registry import ARCH_REGISTRY
        @ARCH_REGISTRY.register()
        class HAT:
            pass
        import hat_basicsr
        """,
    )
    assert result.returncode != 0
    assert 'RegistryClashError' in result.stderr
    assert "already holds a different 'HAT' (__main__.HAT)" in result.stderr
    assert 'rename' in result.stderr
    assert 'AssertionError' not in result.stderr


def test_register_once_is_idempotent_and_refuses_strangers():
    registry = Registry('test')

    class Thing:
        pass

    register_once(registry)(Thing)
    register_once(registry)(Thing)
    assert registry.get('Thing') is Thing
    stranger = type('Thing', (), {'__module__': 'elsewhere'})
    with pytest.raises(RegistryClashError, match='elsewhere.Thing'):
        register_once(registry)(stranger)
