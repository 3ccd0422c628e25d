"""Process-level memory settings for long inference runs."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def keep_freed_memory(mmap_threshold: int = 128 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Makes glibc keep freed memory for reuse (this process only; returns False elsewhere).

    With glibc's adaptive defaults, the activations freed after each batch are handed back to
    the OS and faulted in again by the next batch once slicing, decoding and drawing allocate
    in between: about 120k page faults on the embedded image, 10-15% more CPU time in the
    forward passes. Memory then stays with the process until it exits (up to
    ``trim_threshold`` bytes above what is in use).
    """
    import ctypes
    try:
        libc = ctypes.CDLL('libc.so.6')
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                    and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False


def release_freed_memory() -> bool:
    """Hands the memory freed so far back to the OS (glibc ``malloc_trim``: free pages inside
    the heap too, not only at its top); False where there is no glibc.

    What :func:`keep_freed_memory` keeps is only worth keeping while the same sizes come back;
    on a huge image, decoded TIFF tiles and activations interleave in the heap and its freed
    holes add up, so the large-image runner calls this every few hundred slices (a few page
    faults per call, next to seconds of inference). With it and a smaller tile cache, the
    tool's peak on a 20000 x 20000 TIFF went from 1.58 GB (a third of the way, growing) to
    1.2 GB (``benchmarks/bench_large_tiff.py``).
    """
    import ctypes
    try:
        return bool(ctypes.CDLL('libc.so.6').malloc_trim(0))
    except (OSError, AttributeError):
        return False
