"""torchrun entry point of ``tests/test_training_safety.py::test_distributed_cpu_training``.

Trains the shrunk demo config with the visualization hooks under the MMEngine ``pytorch``
launcher on CPU (gloo), then writes ``rank<r>.json`` into the work dir: what this rank's hooks
chose, how many images they sent to a backend, how long their ``after_val_epoch`` took, when
it last ended and when ``runner.train()`` returned.

Usage:
    torchrun --nproc_per_node 2 tests/dist_train_worker.py DATA_ROOT WORK_DIR HOOKS_JSON
"""
import faulthandler
import json
import os.path as osp
import sys
import time

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_rank
from mmengine.runner import Runner

# Run as a script, Python puts this file's folder (tests/) first on sys.path.
from helpers.runner import tiny_train_cfg


def main() -> None:
    faulthandler.enable()  # a crash in native code (gloo, DDP) prints the Python stack
    data_root, work_dir, hooks_json = sys.argv[1:4]
    torch.set_num_threads(1)
    # MMEngine's pytorch launcher calls torch.cuda.set_device(LOCAL_RANK) before
    # init_process_group, which fails without a GPU. The Runner skips its own init_dist when a
    # process group exists, so the group is created here (gloo, from torchrun's environment).
    torch_dist.init_process_group(backend='gloo')
    cfg = tiny_train_cfg(data_root, work_dir, epochs=2, custom_hooks=json.loads(hooks_json))
    # YOLODetector(use_syncbn=True) converts every BN to torch SyncBatchNorm when the world size
    # is > 1; DDP refuses SyncBatchNorm on CPU modules ("only work with GPU modules") and its
    # training forward needs a GPU. Plain BN (per-rank statistics) is what works on CPU.
    cfg.model.use_syncbn = False
    cfg.launcher = 'pytorch'
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    # The default wrapper passes device_ids=[LOCAL_RANK], which DDP rejects for a CPU module.
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                 broadcast_buffers=False)
    runner = Runner.from_cfg(cfg)

    from mmyolo_vis_hooks.hooks import BaseVisHook
    vis_hooks = [h for h in runner.hooks if isinstance(h, BaseVisHook)]
    record = dict(rank=get_rank(), images_sent=0, hook_seconds=0.0, samples={})
    for hook in vis_hooks:
        log_image, after_val_epoch = hook.log_image, hook.after_val_epoch

        def counted_log_image(*args, _log_image=log_image, **kwargs):
            record['images_sent'] += 1
            return _log_image(*args, **kwargs)

        def timed_after_val_epoch(*args, _after=after_val_epoch, **kwargs):
            start = time.perf_counter()
            try:
                return _after(*args, **kwargs)
            finally:
                record['hook_seconds'] += time.perf_counter() - start
                record['last_hook_end'] = time.time()

        hook.log_image = counted_log_image
        hook.after_val_epoch = timed_after_val_epoch
    runner.train()
    record['train_end'] = time.time()
    for hook in vis_hooks:
        record['samples'][type(hook).__name__] = dict(names=[s.name for s in hook.samples],
                                                      indices=[s.index for s in hook.samples])
    record['epoch'] = runner.epoch
    record['distributed'] = runner.distributed
    record['world_size'] = runner.world_size
    record['wrapped'] = type(runner.model).__name__
    with open(osp.join(work_dir, f'rank{get_rank()}.json'), 'w') as f:
        json.dump(record, f)
    # Harness only, after training: a rank tearing gloo down while the other still runs its
    # last hooks aborted now and then ("terminate called without an active exception").
    torch_dist.barrier()
    torch_dist.destroy_process_group()


if __name__ == '__main__':
    main()
