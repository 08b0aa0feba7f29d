"""Minimal reproduction: a torchrun-restarted worker group cannot initialise over env:// (torch 2.14.1).

    torchrun --nproc_per_node=2 --max-restarts=1 docs/elastic_restart_repro.py env      # fails or hangs
    torchrun --nproc_per_node=2 --max-restarts=1 docs/elastic_restart_repro.py prefix   # exit 0

Rank 1 kills itself (SIGKILL) after the first all_reduce; torchrun stops rank 0 and starts both
again with TORCHELASTIC_RESTART_COUNT=1. With `env`, init_process_group('gloo') of the restarted
group either fails ("Gloo connectFullMesh failed ... Connection refused", exit 1) or hangs past its
timeout, depending on timing (with --rdzv_backend=c10d too): the workers share the agent's TCPStore,
which still holds the first group's keys, so the new ranks read the dead ranks' addresses. With `prefix`, each group initialises under a key prefix named
after its restart count on a client of that store, which is what hat_basicsr.train does after a
restart (hat_basicsr.basicsr_compat._fix_init_dist_pytorch).
"""

import os
import signal
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

restart = int(os.environ['TORCHELASTIC_RESTART_COUNT'])
rank, world_size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
timeout = timedelta(seconds=30)
if sys.argv[1] == 'prefix':
    store = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), is_master=False, timeout=timeout)
    store = dist.PrefixStore(f'restart_{restart}', store)
    dist.init_process_group('gloo', store=store, rank=rank, world_size=world_size, timeout=timeout)
else:
    dist.init_process_group('gloo', timeout=timeout)
total = torch.ones(1)
dist.all_reduce(total)
print(f'restart {restart}, rank {rank}: all_reduce gave {total.item():.0f}', flush=True)
if restart == 0 and rank == 1:
    os.kill(os.getpid(), signal.SIGKILL)
dist.barrier()
dist.destroy_process_group()
