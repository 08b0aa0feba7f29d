"""Build the demo dataset (datasets/demo) from scikit-image's bundled photographs; see datasets/README.md.

Usage: python datasets/make_demo_data.py [--root datasets/demo] [--force]
"""

import argparse

import hat_basicsr  # noqa: F401  (makes basicsr importable)
from hat_basicsr.data.demo_data import build_demo_data


def main() -> None:
    parser = argparse.ArgumentParser(description='Build the demo SR dataset (idempotent).')
    parser.add_argument('--root', default='datasets/demo', help='output folder (default: datasets/demo)')
    parser.add_argument('--force', action='store_true', help='delete and rebuild train/ and val/')
    args = parser.parse_args()
    root = build_demo_data(args.root, force=args.force)
    print(f'ready: {root}')


if __name__ == '__main__':
    main()
