"""``python -m runners.tiny DIR [--seed N] [--official-size] [--chat-template]``: write a random model root."""

from __future__ import annotations

import argparse
import time

from runners.tiny import build_tiny_model_root, write_tiny_awq_part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", help="folder to write the model root into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--awq", action="store_true", help="also write Step-Audio-EditX-AWQ-4bit/ (W4A16)")
    parser.add_argument("--official-size", action="store_true",
                        help="the LLM (3.5 B, 7 GB), flow and vocoder at the release's dimensions, for speed figures")
    parser.add_argument("--chat-template", action="store_true",
                        help="tokenizer files with a chat template, as the 2026 release builds its prompts")
    args = parser.parse_args()
    start = time.perf_counter()
    root = build_tiny_model_root(args.root, seed=args.seed, official_size=args.official_size,
                                 chat_template=args.chat_template)
    if args.awq:
        write_tiny_awq_part(root)
    size = "official-size" if args.official_size else "tiny"
    print(f"{size} random model root written to {root} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
