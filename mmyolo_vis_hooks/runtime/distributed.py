"""Sliced inference in several processes (``torchrun``, MMEngine's ``pytorch`` launcher).

The images are sharded across ranks (rank ``r`` of ``n`` takes positions ``r, r + n, ...`` of
the sorted input list); every rank runs sliced inference on its share and rank 0 assembles one
``detections.json`` in input order, the same document a single process writes.

No collective operation (gather, barrier) is used after start-up: a collective needs every
rank, so one rank that crashed, or was killed on another machine, would leave the others
waiting until the process group's timeout, which must exceed the slowest rank's whole share
(hours on large images). Instead, ranks other than 0 publish each image's record on the job's
key-value store (the TCPStore ``torchrun`` set up) as soon as it is done, and beat a heartbeat
counter on a background thread. Rank 0, after its own share, collects the records; a rank whose
heartbeat has not moved for ``timeout`` seconds is given up, and its images that never arrived
are reported as failed. A failing image is a record with its error, never a missing message.
"""
import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from ..engine.core.checks import check_choice, check_number
from ..engine.core.devices import default_device, resolve_device

LAUNCHERS = ('none', 'pytorch')
# What torchrun sets in every worker's environment (``--launcher pytorch`` needs them).
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')
DEFAULT_TIMEOUT = 300.0
_STORE_PREFIX = 'mmyolo_vis_hooks/sliced'


def check_launcher(launcher: str, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Checks the launcher and its environment before any work.

    Raises:
        ValueError: Unknown launcher, a timeout that is not positive, or ``pytorch`` without
            the environment ``torchrun`` sets.
    """
    check_choice('launcher', launcher, LAUNCHERS)
    check_number('distributed timeout', timeout, 0, low_open=True,
                 accepted='a positive number of seconds')
    missing = [k for k in TORCHRUN_ENV if launcher == 'pytorch' and not os.environ.get(k)]
    if missing:
        raise ValueError(f'--launcher pytorch needs the environment torchrun sets '
                         f'({", ".join(missing)} missing); start it with torchrun '
                         f'--nproc_per_node N <tool> ... --launcher pytorch')


def shard(num_items: int, rank: int, world_size: int) -> List[int]:
    """Positions of rank ``rank``'s share of ``num_items`` items: ``rank::world_size``."""
    return list(range(rank, num_items, world_size))


@dataclass
class DistContext:
    """This process's place in the job.

    Args:
        rank (int): Global rank. Defaults to 0.
        world_size (int): Number of processes. Defaults to 1.
        device (str): The device this rank's model runs on. Defaults to cuda:0 where CUDA
            is available, else cpu.
        backend (str, optional): The process group's backend (gloo, nccl); None when
            single-process. Defaults to None.
        store: The job's key-value store (torch.distributed.Store); None when
            single-process. Defaults to None.
        timeout (float): Seconds without a sign of life after which rank 0 gives a rank up.
            Defaults to ``DEFAULT_TIMEOUT``.
    """
    rank: int = 0
    world_size: int = 1
    device: str = field(default_factory=default_device)
    backend: Optional[str] = None
    store: object = None
    timeout: float = DEFAULT_TIMEOUT
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _beat: Optional[threading.Thread] = field(default=None, repr=False)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.store is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, num_items: int) -> List[int]:
        return shard(num_items, self.rank, self.world_size)

    def start_heartbeat(self, interval: Optional[float] = None) -> None:
        """Beats ``beat/<rank>`` on the store every ``interval`` seconds (default: a tenth of
        the timeout, at most 5 s) until :meth:`close`; store errors (rank 0 gone) end it."""
        if self.store is None or self._beat is not None:
            return
        interval = interval or min(5.0, self.timeout / 10)
        key = f'beat/{self.rank}'

        def beat():
            try:
                while not self._stop.wait(interval):
                    self.store.add(key, 1)
            except Exception:  # noqa: B902 the collector is gone; nothing to tell it
                pass

        self.store.add(key, 1)
        self._beat = threading.Thread(target=beat, name='heartbeat', daemon=True)
        self._beat.start()

    def close(self) -> None:
        """Stops the heartbeat and leaves the process group."""
        self._stop.set()
        if self._beat is not None:  # a daemon: not held up by a store that stopped answering
            self._beat.join(timeout=1.0)
        if self.backend is not None:
            import torch.distributed as torch_dist
            if torch_dist.is_initialized():
                torch_dist.destroy_process_group()


def init_distributed(launcher: str = 'none', device: Optional[str] = None,
                     timeout: float = DEFAULT_TIMEOUT) -> DistContext:
    """Joins the job ``torchrun`` started (``launcher='pytorch'``) or returns a
    single-process context (``'none'``).

    The backend follows the device: NCCL when the model runs on CUDA (each rank on
    ``cuda:<LOCAL_RANK>``, MMDetection's convention), gloo on the CPU. The process group is
    created from the same store the results travel through (``torch.distributed.rendezvous``
    on ``env://``, what ``init_process_group`` does itself), so that store is reachable.

    Args:
        launcher (str): ``none`` or ``pytorch``. Defaults to 'none'.
        device (str): ``cpu``, ``cuda`` or ``cuda:<i>`` (the index is replaced by the local
            rank under ``pytorch``); None means cuda where CUDA is available, else cpu
            (``core.devices.default_device``). Defaults to None.
        timeout (float): Seconds for joining, and without a sign of life from a rank before
            rank 0 gives it up. Defaults to ``DEFAULT_TIMEOUT``.
    """
    check_launcher(launcher, timeout)
    device = resolve_device(device)
    if launcher == 'none':
        return DistContext(device=device, timeout=timeout)
    import torch
    import torch.distributed as torch_dist
    local_rank = int(os.environ['LOCAL_RANK'])
    if device.startswith('cuda'):
        device, backend = f'cuda:{local_rank}', 'nccl'
        torch.cuda.set_device(local_rank)
    else:
        backend = 'gloo'
    wait = timedelta(seconds=timeout)
    store, rank, world_size = next(torch_dist.rendezvous('env://', timeout=wait))
    torch_dist.init_process_group(backend, store=torch_dist.PrefixStore('default_pg', store),
                                  rank=rank, world_size=world_size, timeout=wait)
    ctx = DistContext(rank, world_size, device, backend,
                      torch_dist.PrefixStore(_STORE_PREFIX, store), timeout)
    if not ctx.is_main:
        ctx.start_heartbeat()
    return ctx


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ResultExchange:
    """Moves image records from ranks other than 0 to rank 0 over the job's store.

    Args:
        ctx (DistContext): This rank's context (with a store when distributed).
        poll (float): Seconds between rank 0's looks at the store. Defaults to 0.2.
        log (callable): Where rank 0 says it gave a rank up. Defaults to stderr.
    """

    def __init__(self, ctx: DistContext, poll: float = 0.2,
                 log: Callable[[str], None] = _log) -> None:
        self.ctx = ctx
        self.poll = poll
        self.log = log
        self.published = 0

    def same_inputs(self, names: Sequence[str]) -> bool:
        """Whether this rank lists the same input images as rank 0 (each rank lists them
        itself; the shares only add up when the lists agree). Rank 0 posts a digest of its
        list; the others wait for it (at most the store's timeout) and compare."""
        digest = hashlib.sha256('\n'.join(names).encode('utf-8')).hexdigest()
        if self.ctx.is_main:
            self.ctx.store.set('inputs', digest)
            return True
        return self.ctx.store.get('inputs').decode('utf-8') == digest

    def publish(self, record: Dict) -> None:
        """Rank > 0: makes one image's record available to rank 0."""
        self.ctx.store.set(f'image/{record["index"]}', json.dumps(record))
        self.published += 1

    def finish(self) -> None:
        """Rank > 0: says this rank's share is done."""
        self.ctx.store.set(f'done/{self.ctx.rank}', str(self.published))

    def collect(self, paths: Sequence[str], names: Sequence[str]) -> List[Dict]:
        """Rank 0: the records of every other rank's share of ``paths`` (output ``names``),
        once each rank is done or has shown no sign of life for ``ctx.timeout`` seconds; an
        image that never arrived is a record with an error naming its rank."""
        store, timeout = self.ctx.store, self.ctx.timeout
        pending = set(range(1, self.ctx.world_size))
        seen = {r: (store.add(f'beat/{r}', 0), time.monotonic()) for r in pending}
        lost: Dict[int, str] = {}
        while pending:
            for r in sorted(pending):
                if store.check([f'done/{r}']):
                    pending.discard(r)
                    continue
                beat, now = store.add(f'beat/{r}', 0), time.monotonic()
                if beat != seen[r][0]:
                    seen[r] = (beat, now)
                elif now - seen[r][1] > timeout:
                    lost[r] = (f'not processed: rank {r} stopped (no sign of life for '
                               f'{timeout:g} s)')
                    self.log(f'rank {r} gave no sign of life for {timeout:g} s; its '
                             f'missing images are reported as failed')
                    pending.discard(r)
            if pending:
                time.sleep(self.poll)
        records = []
        for r in range(1, self.ctx.world_size):
            for index in shard(len(paths), r, self.ctx.world_size):
                key = f'image/{index}'
                if store.check([key]):
                    records.append(json.loads(store.get(key)))
                    store.delete_key(key)
                else:
                    records.append(dict(index=index, path=paths[index],
                                        file_name=names[index], error=lost.get(
                        r, f'not processed: rank {r} finished without it')))
        return records


def run_sharded(iter_records: Callable[[Sequence[int]], Iterable[Dict]],
                paths: Sequence[str], names: Sequence[str], ctx: DistContext,
                on_failure: Optional[Callable[[Dict], None]] = None) -> Optional[List[Dict]]:
    """Runs this rank's share and brings every record to rank 0.

    Args:
        iter_records (callable): Given the positions of this rank's share, yields one image
            record per position (``LargeImageRunner.iter_records``).
        paths (Sequence[str]): The whole input, in order.
        names (Sequence[str]): Their output names.
        ctx (DistContext): This rank's context.
        on_failure (callable, optional): Called with each failed record of this rank as it
            happens. Defaults to None.

    Returns:
        list[dict] | None: On rank 0 every image's record (any order); None on other ranks.
    """
    exchange = ResultExchange(ctx) if ctx.distributed else None
    if exchange is not None and not exchange.same_inputs(names):
        for index in ctx.shard(len(paths)):  # rank 0 hears it now, not after a timeout
            exchange.publish(dict(index=index, path=paths[index], file_name=names[index],
                                  error=f'not processed: rank {ctx.rank} lists other input '
                                  f'images than rank 0 (every machine needs the same files '
                                  f'under the same names)'))
        exchange.finish()
        return None
    records = []
    for record in iter_records(ctx.shard(len(paths))):
        if 'error' in record and on_failure is not None:
            on_failure(record)
        if ctx.is_main:
            records.append(record)
        else:
            exchange.publish(record)
    if not ctx.is_main:
        exchange.finish()
        return None
    if exchange is not None:
        records += exchange.collect(paths, names)
    return records
