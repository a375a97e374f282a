"""`mta toy ...`: the toy task of the paper's Table 1 (shared/mta-spec.md §5)."""

import argparse

from mta.data import toy


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `toy` command to ``subparsers``; return its parser (sub-commands hang off ``toy_command``)."""
    parser = subparsers.add_parser("toy", help="toy task of the paper's Table 1 (spec §5)")
    toy_sub = parser.add_subparsers(dest="toy_command", required=True)
    _register_generate(toy_sub)
    return parser


def _register_generate(toy_sub) -> None:
    p = toy_sub.add_parser("generate", help="write toy-task samples as JSONL")
    p.add_argument("--n-block", type=int, default=5, help="letters per block (N in the paper)")
    p.add_argument("--n-query", type=int, default=2, help="query letters (L in the paper)")
    p.add_argument(
        "--variant", choices=toy.VARIANTS, default="all", help="label: whole target block, first or last letter"
    )
    p.add_argument("--samples", type=int, required=True, help="number of samples")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--num-blocks", type=int, default=None, help="blocks per sample (default: the most that fit 319 characters)"
    )
    p.add_argument("--out", required=True, help="output .jsonl file")
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> None:
    samples = toy.generate(args.n_block, args.n_query, args.variant, args.samples, args.seed, args.num_blocks)
    toy.write_jsonl(samples, args.out)
    print(f"wrote {len(samples)} samples to {args.out}")
