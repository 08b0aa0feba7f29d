"""Parameters and multiply-adds: the paper's figures, the analytic count against torch's counter,
and the `info` subcommand."""

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from hat_basicsr import HAT
from hat_basicsr.archs.hat_complexity import hat_complexity
from hat_basicsr.archs.hat_config import RELEASE_OPTIONS, RELEASE_VARIANTS
from hat_basicsr.cli import info

from helpers import TINY_OPTIONS, run_command

RELEASE = {**RELEASE_OPTIONS, 'upscale': 4, 'in_chans': 3}
# Paper (64x64 input, x4): Multi-Adds in G; parameters from REFERENCE.md §1.
PAPER = {
    'HAT-S': (RELEASE_VARIANTS['HAT-S'], 54.9e9, 9621183),
    'HAT': (RELEASE_VARIANTS['HAT'], 102.4e9, 20772507),
}
TINY = {'type': 'HAT', 'upscale': 2, **TINY_OPTIONS, 'depths': [2, 1], 'num_heads': [2, 4]}


@pytest.mark.parametrize('variant', list(PAPER))
def test_paper_multi_adds_and_parameters(variant):
    overrides, paper_macs, params = PAPER[variant]
    options = {**RELEASE, **overrides}
    with torch.device('meta'):
        model = HAT(**options)
    report = hat_complexity(model, options, (64, 64))
    assert report.params == params
    assert sum(row.params for row in report.rows) == params
    assert abs(report.macs - paper_macs) / paper_macs < 0.02
    rows = {row.name: row for row in report.rows}
    # Attention matrix products are counted: without them HAT would be about 85 G, not 102.4 G.
    assert rows['layers.0 OCAB'].macs > 2 * rows['layers.0 HABs x6: MLP'].macs / 6


@pytest.mark.parametrize('size', [(16, 24), (13, 22)])
def test_analytic_count_equals_what_torch_counts_in_a_real_forward(size):
    options = {key: value for key, value in TINY.items() if key != 'type'}
    # The release's matmul attention: torch's counter has always counted bmm, while whether it counts
    # the fused SDPA kernels depends on the torch version (2.14 on CPU does not).
    model = HAT(**options, attn_impl='reference').eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, *size))
    report = hat_complexity(model, options, size)
    assert report.processed_size == (16, 24)
    assert report.macs == pytest.approx(counter.get_total_flops() / 2, rel=1e-3)


def write_options(path, network):
    path.write_text(yaml.safe_dump({'scale': 2, 'network_g': network}))
    return path


def test_info_on_an_option_file_and_a_checkpoint_agree(tmp_path, capsys):
    option_file = write_options(tmp_path / 'tiny.yml', TINY)
    checkpoint = tmp_path / 'tiny.pth'
    torch.save({'params_ema': HAT(**{k: v for k, v in TINY.items() if k != 'type'}).state_dict()}, checkpoint)
    outputs = []
    for source in (option_file, checkpoint):
        assert run_command(info.add_parser, ['info', str(source), '--size', '30', '20']) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert 'processed as 32x20' in outputs[0]
    assert 'layers.1 OCAB' in outputs[0] and 'layers.0 HABs x2: CAB' in outputs[0]


def test_info_measures_other_architectures_on_the_meta_device(tmp_path, capsys):
    network = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_conv': 2, 'upscale': 2}
    option_file = write_options(tmp_path / 'srvgg.yml', network)
    report = info.source_complexity(option_file, (10, 12))
    assert report.macs == 10 * 12 * 9 * (3 * 8 + 2 * 8 * 8 + 8 * 3 * 4)
    assert run_command(info.add_parser, ['info', str(option_file)]) == 0
    assert 'body' in capsys.readouterr().out


def test_info_reports_a_bad_source_in_one_line(tmp_path, capsys):
    not_a_model = tmp_path / 'notes.pth'
    torch.save({'params': {'weight': torch.zeros(2)}}, not_a_model)
    assert run_command(info.add_parser, ['info', str(not_a_model)]) == 2
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and 'not a HAT state dict' in error


def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path, capsys):
    """PyYAML's own message takes seven lines; every entry point reads option files through
    hat_basicsr.utils.option_yaml and says FILE:LINE:COLUMN instead."""
    from hat_basicsr import demo

    broken = tmp_path / 'broken.yml'
    broken.write_text('scale: 2\nnetwork_g:\n  type: HAT\n  depths: [6, 6\n  embed_dim: 180\n')
    expected = (
        f"{broken}:5:12: invalid YAML: expected ',' or ']', but got ':' "
        '(while parsing a flow sequence started at line 4, column 11)'
    )
    assert run_command(info.add_parser, ['info', str(broken)]) == 2
    assert capsys.readouterr().err == f'hat-basicsr info: error: {expected}\n'
    with pytest.raises(SystemExit) as stopped:
        demo.main(['--opt', str(broken)])
    assert stopped.value.code == 2 and capsys.readouterr().err == f'hat_basicsr.demo: error: {expected}\n'
