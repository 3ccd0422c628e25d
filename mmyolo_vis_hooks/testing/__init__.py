"""Helpers for tests and benchmarks that build several MMEngine Runners in one process."""
import logging


def clear_mmengine_singletons() -> None:
    """Clears every MMEngine ManagerMixin singleton: Visualizer and its subclasses (such as
    DetLocalVisualizer, which keep their own instance dicts), DefaultScope, MessageHub and
    MMLogger. Without this a second Runner reuses the first one's Visualizer and log dir."""
    from mmengine.utils import ManagerMixin
    pending = [ManagerMixin]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if '_instance_dict' in vars(cls):
            cls._instance_dict.clear()
    logging.shutdown()
