"""Refusal census: every config file of the installed MMYOLO and MMDetection, classified as the
tools classify them before building (``runtime/config_check.py``; no model is built), with the
count per reason and one example message each.

Example:
    python benchmarks/refusal_sweep.py               # both packages
    python benchmarks/refusal_sweep.py --package mmdet --list unregistered type
    python benchmarks/refusal_sweep.py --small       # every 10th file (the tests run it)

A file the classifier cannot read is counted as ``unreadable (<error>)``; with ``--small`` the
run exits with 1 when one is (the tools would then fail with a traceback, not a refusal) or
when the sample holds no buildable config.
"""
import argparse
import glob
import importlib
import os.path as osp
import sys
import time
from collections import Counter

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmyolo_vis_hooks.runtime.config_check import classify_file, is_importable  # noqa: E402


def config_files(package: str) -> list:
    """Every ``.py`` under the package's ``.mim/configs`` (sorted)."""
    root = osp.join(osp.dirname(importlib.import_module(package).__file__), '.mim', 'configs')
    return sorted(glob.glob(osp.join(root, '**', '*.py'), recursive=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--package', nargs='+', default=['mmyolo', 'mmdet'],
                        help='packages whose configs are classified')
    parser.add_argument('--list', nargs='+', default=None, metavar='REASON',
                        help='also print every config refused for this reason')
    parser.add_argument('--every', type=int, default=1,
                        help='classify every N-th file only (sorted paths)')
    parser.add_argument('--small', action='store_true', help='--every 10, checked')
    args = parser.parse_args()
    if args.small:
        args.every = 10
    listed = ' '.join(args.list) if args.list else None
    totals = Counter()
    for package in args.package:
        if not is_importable(package):
            print(f'{package}: not installed, skipped')
            continue
        paths = config_files(package)[::args.every]
        counts, examples, named = Counter(), {}, []
        start = time.perf_counter()
        for path in paths:
            try:
                refusal = classify_file(path)
                reason = refusal.reason if refusal is not None else 'buildable'
            except Exception as err:  # noqa: BLE001 - a file the tools cannot read either
                refusal, reason = err, f'unreadable ({type(err).__name__})'
            counts[reason] += 1
            totals['unreadable' if reason.startswith('unreadable') else reason] += 1
            if refusal is not None:
                examples.setdefault(reason, str(refusal))
            if reason == listed:
                named.append(f'  {path.split("/.mim/configs/")[1]}: {refusal}')
        seconds = time.perf_counter() - start
        print(f'{package}: {len(paths)} config files, classified in {seconds:.0f} s')
        for reason, count in counts.most_common():
            print(f'  {count:4d}  {reason}')
        for reason, message in examples.items():
            print(f'  e.g. {reason}: {message}')
        print('\n'.join(named))
    if args.small and (totals['unreadable'] or not totals['buildable']):
        print(f'FAILED: {totals["unreadable"]} unreadable, {totals["buildable"]} buildable',
              file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
