from setuptools import find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open('mmyolo_vis_hooks/version.py', encoding='utf-8') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


# The repository's configs/ folder is installed as the package mmyolo_vis_hooks.configs: one
# copy of the snippets serves a clone (relative _base_ paths) and a pip install (imports).
CONFIG_PACKAGES = ['mmyolo_vis_hooks.configs', 'mmyolo_vis_hooks.configs._base_',
                   'mmyolo_vis_hooks.configs.demo']

setup(
    version=read_version(),
    packages=find_packages(include=['mmyolo_vis_hooks', 'mmyolo_vis_hooks.*']) +
    CONFIG_PACKAGES,
    package_dir={'mmyolo_vis_hooks.configs': 'configs'},
)
