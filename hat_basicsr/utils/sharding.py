"""Splitting a job's inputs over processes (array-job tasks, torchrun ranks) and adding up what
each process counted.

A share is every `count`-th item starting at `index`: the shares of one count are disjoint,
together hold every item once, differ in size by at most one, and a share of a share is again a
share, so an array job of torchrun jobs splits the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import List, Sequence, TypeVar

Item = TypeVar('Item')
# How long a rank that finished waits for the others: ranks of one job end at different times
# (their images differ), and torchrun stops the waiting ones itself when a rank dies.
RANKS_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Shard:
    """The `index`-th (0-based) of `count` disjoint shares of a sequence."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f'shard {self.index}/{self.count}: expected 0 <= K < N')

    @classmethod
    def parse(cls, text: str) -> 'Shard':
        """'K/N' -> Shard(K, N); a ValueError that quotes `text` otherwise."""
        index, slash, count = text.partition('/')
        try:
            if not slash:
                raise ValueError
            return cls(int(index), int(count))
        except ValueError:
            raise ValueError(f'expected K/N with 0 <= K < N (e.g. 0/4), got {text!r}') from None

    @classmethod
    def from_launcher(cls) -> 'Shard':
        """This process's share from torchrun's RANK and WORLD_SIZE (the whole when they are unset)."""
        rank, world_size = os.environ.get('RANK', '0'), os.environ.get('WORLD_SIZE', '1')
        try:
            return cls(int(rank), int(world_size))
        except ValueError:
            raise ValueError(f'RANK={rank!r} and WORLD_SIZE={world_size!r} do not name a rank of a job') from None

    def select(self, items: Sequence[Item]) -> List[Item]:
        return list(items[self.index :: self.count])

    def within(self, inner: 'Shard') -> 'Shard':
        """The `inner` share of this share, as one share of the whole sequence."""
        return Shard(self.index + inner.index * self.count, self.count * inner.count)


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK): the GPU it should use."""
    return int(os.environ.get('LOCAL_RANK', '0'))


def sum_over_ranks(values: Sequence[int], launcher: Shard) -> List[int]:
    """`values` added up over the ranks of the torchrun job, on every rank, through a gloo group
    (CPU; no GPU collectives needed for a few counts). The group meets on torchrun's store under a
    prefix named after the restart count: after an elastic restart a plain env:// init finds the
    previous round's keys and fails (see REFERENCE, section 6)."""
    import torch
    import torch.distributed as dist

    if launcher.count == 1:
        return list(values)
    agent_store = os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True'
    store = dist.TCPStore(
        os.environ['MASTER_ADDR'],
        int(os.environ['MASTER_PORT']),
        launcher.count,
        is_master=not agent_store and launcher.index == 0,
        timeout=RANKS_TIMEOUT,
    )
    prefix = f'hat_basicsr/sum_over_ranks/{os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")}'
    dist.init_process_group(
        'gloo',
        store=dist.PrefixStore(prefix, store),
        rank=launcher.index,
        world_size=launcher.count,
        timeout=RANKS_TIMEOUT,
    )
    try:
        total = torch.tensor(list(values), dtype=torch.int64)
        dist.all_reduce(total)
        return total.tolist()
    finally:
        dist.destroy_process_group()
