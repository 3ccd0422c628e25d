from setuptools import setup


def read_version() -> str:
    namespace: dict = {}
    with open('mmyolo_vis_hooks/version.py', encoding='utf-8') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(version=read_version())
