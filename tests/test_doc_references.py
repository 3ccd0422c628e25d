"""Every name the text cites exists: dotted names (``mmyolo_vis_hooks.engine.cam.BoxCAM``, and
package-relative ones in backticks, ``engine.cam.compose``) import or resolve by ``getattr``,
and backticked repository paths (``engine/cam/draw.py``, ``tests/hooks/x.py::test_y``) are
files of this repository (with that test in them). The text: the package's, the tests', the
benchmarks', tools' and scripts' Python files (docstrings and comments), README.md and
docs/*.md. A renamed or moved module then fails here, not in a reader's hands."""
import glob
import importlib
import os.path as osp
import re
from typing import Iterator, List, Tuple

import pytest

from helpers import REPO_ROOT

PACKAGE = 'mmyolo_vis_hooks'
# The text cites the package's source files: checking them needs the source checkout, not a
# tree whose package folder was removed so that the tests import an installed wheel
# (scripts/check_official_mmyolo_env.sh runs the tests that way).
pytestmark = pytest.mark.skipif(not osp.isdir(osp.join(REPO_ROOT, PACKAGE)),
                                reason='needs the source checkout (the package folder is absent)')
TEXT_FILES = ('mmyolo_vis_hooks/**/*.py', 'tests/**/*.py', 'benchmarks/*.py', 'tools/*.py',
              'scripts/*.py', 'scripts/*.sh', 'configs/**/*.py', 'README.md', 'docs/*.md')
# mmyolo_vis_hooks.a.b.c; not inside a longer path or name (``x/mmyolo_vis_hooks.egg``).
FULL_NAME = re.compile(r'(?<![\w./-])(mmyolo_vis_hooks(?:\.[A-Za-z_]\w*)+)')
# ``engine.cam.compose`` and the like: the package's sub-packages, cited without the prefix.
RELATIVE_NAME = re.compile(
    r'`+((?:engine|hooks|backends|cli|runtime|data|testing)(?:\.[A-Za-z_]\w*)+)(?:\(\))?`')
# ``engine/cam/draw.py``, ``tests/x.py::test_y``, ``scripts/test.sh``: a file of ours; in
# backticks, or anywhere when it starts with a folder of the repository or the package.
PATH = re.compile(r'`+([\w./-]+\.(?:py|sh|js|md))(?:::(\w+))?`'
                  r'|(?<![\w./-])((?:mmyolo_vis_hooks|tests|docs|tools|scripts|benchmarks|engine|'
                  r'hooks|backends|cli|runtime)/[\w./-]*\w\.(?:py|sh|js|md))(?:::(\w+))?')
# Top-level folders of the repository and the package's sub-packages: a slashed path starting
# elsewhere (MMYOLO's ``demo/...``, ``site-packages/...``) is not a file of ours to check.
OUR_FOLDERS = ('mmyolo_vis_hooks', 'tests', 'docs', 'tools', 'scripts', 'benchmarks', 'configs',
               'engine', 'hooks', 'backends', 'cli', 'runtime', 'data', 'testing', '.ci')
# Files of MMYOLO (its ``demo/`` scripts), cited by their bare name for their flags.
THEIRS = {'large_image_demo.py', 'boxam_vis_demo.py', 'featmap_vis_demo.py'}


def resolves(name: str) -> bool:
    """Whether the dotted ``name`` is a module of this repository or an attribute of one."""
    parts = name.split('.')
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _repo_files() -> List[str]:
    return [osp.relpath(f, REPO_ROOT) for pattern in ('**/*.py', '**/*.sh', '**/*.js', '**/*.md')
            for f in glob.glob(osp.join(REPO_ROOT, pattern), recursive=True)
            if '/.venv/' not in f and '/.git/' not in f]


def path_exists(path: str, cited_in: str, repo_files: List[str]) -> bool:
    """Whether ``path`` is a file of this repository: relative to its root, to the package, to
    ``tests/`` or to the citing file's folder; a bare file name anywhere in it."""
    if '/' not in path:
        return any(osp.basename(f) == path for f in repo_files)
    bases = (REPO_ROOT, osp.join(REPO_ROOT, PACKAGE), osp.join(REPO_ROOT, 'tests'),
             osp.dirname(osp.join(REPO_ROOT, cited_in)))
    return any(osp.isfile(osp.normpath(osp.join(base, path))) for base in bases)


def cited_names(text: str) -> Iterator[Tuple[str, str]]:
    """``('name', dotted)`` and ``('path', path[::test])`` for every citation in ``text``."""
    for match in FULL_NAME.finditer(text):
        yield 'name', match.group(1).rstrip('.')
    for match in RELATIVE_NAME.finditer(text):
        yield 'name', f'{PACKAGE}.{match.group(1)}'
    for match in PATH.finditer(text):
        path, test = match.group(1, 2) if match.group(1) else match.group(3, 4)
        if path in THEIRS or ('/' in path and path.split('/')[0] not in OUR_FOLDERS):
            continue
        yield 'path', path + (f'::{test}' if test else '')


def unresolved(text: str, cited_in: str, repo_files: List[str]) -> List[str]:
    """The citations of ``text`` (from the file ``cited_in``) that name nothing here."""
    missing = []
    for kind, cited in cited_names(text):
        if kind == 'name':
            if not resolves(cited):
                missing.append(cited)
            continue
        path, _, test = cited.partition('::')
        if not path_exists(path, cited_in, repo_files):
            missing.append(cited)
        elif test:
            candidates = [osp.join(REPO_ROOT, path), osp.join(REPO_ROOT, 'tests', path)]
            source = next(open(f, encoding='utf-8').read() for f in candidates if osp.isfile(f))
            if not re.search(rf'^\s*def {test}\(', source, re.M):
                missing.append(cited)
    return missing


def test_every_cited_module_path_and_name_exists():
    repo_files = _repo_files()
    problems = []
    for pattern in TEXT_FILES:
        for file in sorted(glob.glob(osp.join(REPO_ROOT, pattern), recursive=True)):
            rel = osp.relpath(file, REPO_ROOT)
            if rel == osp.join('tests', osp.basename(__file__)):
                continue  # this file's docstrings cite made-up names on purpose
            with open(file, encoding='utf-8') as f:
                problems += [f'{rel}: {name}' for name in unresolved(f.read(), rel, repo_files)]
    assert not problems, 'cited but not found:\n' + '\n'.join(sorted(set(problems)))


@pytest.mark.parametrize('text, missing', [
    ('``mmyolo_vis_hooks.engine.cam.BoxCAM``', []),
    ('see mmyolo_vis_hooks.engine.cam.no_such_function.', ['mmyolo_vis_hooks.engine.cam.'
                                                          'no_such_function']),
    ('``mmyolo_vis_hooks.engine.no_such_module``', ['mmyolo_vis_hooks.engine.no_such_module']),
    ('``engine.core.geometry.box_iou``', []),
    ('``engine.align.map_to_original``', ['mmyolo_vis_hooks.engine.align.map_to_original']),
    ('`engine/cam/draw.py`', []),
    ('`engine/cam/no_such_file.py`', ['engine/cam/no_such_file.py']),
    ('`tests/test_doc_references.py::test_every_cited_module_path_and_name_exists`', []),
    ('`tests/test_doc_references.py::test_made_up`', ['tests/test_doc_references.py::'
                                                      'test_made_up']),
    ('MMYOLO\'s `demo/large_image_demo.py`', []),
    ('(tests/helpers/mmyolo_models.py)', []),
    ('(tests/family_models.py)', ['tests/family_models.py']),
])
def test_made_up_names_are_found(text, missing):
    assert unresolved(text, 'docs/x.md', _repo_files()) == missing
