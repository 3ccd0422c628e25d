"""A C CRC-32C for TensorBoard's event writer.

TensorBoard (as used by ``torch.utils.tensorboard`` and mmengine's TensorboardVisBackend)
checksums every event record with a pure-Python CRC-32C: about 17 ms per 200 KB image on this
project's 2-core machine. It runs in the writer's background thread while holding the GIL, so
the training loop (and a hook's own drawing) waits for it: each logged picture silently costs
training that much. ``google_crc32c``'s C implementation gives the same checksums (checked
before it is used) in microseconds; the event files are byte for byte the same.
"""
import os
from typing import Callable, Optional

_MASK_DELTA = 0xA282EAD8
_FLAG = '_mmyolo_vis_hooks_fast_crc'


def _c_masked_crc32c() -> Optional[Callable[[bytes], int]]:
    try:
        import google_crc32c
    except ImportError:
        return None
    if getattr(google_crc32c, 'implementation', None) != 'c':
        return None  # its Python fallback is no faster than TensorBoard's

    def masked_crc32c(data) -> int:
        crc = google_crc32c.value(bytes(data))
        # TFRecord's masking, as in tensorboard's own masked_crc32c
        return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF

    setattr(masked_crc32c, _FLAG, True)
    return masked_crc32c


def install_fast_event_crc() -> bool:
    """Makes TensorBoard's record writer use the C CRC-32C; idempotent.

    Changes nothing, and returns False, when ``google_crc32c`` has no C implementation, when
    TensorBoard's writer is not where expected, when the C version would give a different
    checksum on a probe, or when the environment variable ``MMYOLO_VIS_HOOKS_KEEP_TB_CRC`` is
    set. Returns True when the fast checksum is in use.
    """
    if os.environ.get('MMYOLO_VIS_HOOKS_KEEP_TB_CRC'):
        return False
    try:
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    current = getattr(record_writer, 'masked_crc32c', None)
    if current is None:
        return False
    if getattr(current, _FLAG, False):
        return True
    fast = _c_masked_crc32c()
    if fast is None:
        return False
    probe = bytes(range(256)) * 5 + b'mmyolo_vis_hooks'
    if any(fast(data) != current(data) for data in (b'', probe, probe[:37])):
        return False
    record_writer.masked_crc32c = fast
    return True
