"""How many CPUs this process has, and whether torch leaves one free for a helper thread."""
import os

import torch


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is
    none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def core_free_beside(device: torch.device) -> bool:
    """Whether a helper thread can run beside the model without taking a core from it: the
    model is not on the CPU, or torch's intra-op threads leave a usable CPU unused.

    Measured on 2 cores (``benchmarks/bench_large_image.py``): a helper beside a 2-thread
    forward made sliced inference 1.4x slower (two OpenMP teams on two cores); beside a
    1-thread forward it cost nothing.
    """
    return device.type != 'cpu' or torch.get_num_threads() < usable_cpus()
