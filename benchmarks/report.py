"""Shared by the benchmark scripts: the CPU's name and rewriting one marked section of a results file."""

import platform
from pathlib import Path


def cpu_model() -> str:
    cpuinfo = Path('/proc/cpuinfo')
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next(
        (line.split(':', 1)[1].strip() for line in lines if line.startswith('model name')),
        platform.processor() or 'unknown CPU',
    )


def replace_section(path: Path, begin: str, end: str, text: str, title: str) -> None:
    """Write `text` between the markers `begin` and `end` of `path`, replacing what was there, or
    append it (creating the file with heading `title`); the rest of the file is kept."""
    old = path.read_text() if path.exists() else f'{title}\n'
    block = f'{begin}\n{text}\n{end}'
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip('\n') + '\n\n' + block + '\n'
    path.write_text(new)
