"""``python -m runners.tiny DIR [--seed N]``: write a tiny random model root."""

from __future__ import annotations

import argparse
import time

from runners.tiny import build_tiny_model_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", help="folder to write the model root into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    root = build_tiny_model_root(args.root, seed=args.seed)
    print(f"tiny model root written to {root} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
