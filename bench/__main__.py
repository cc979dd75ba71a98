"""python -m bench [NAME ...]: run the named benchmarks (default: all)."""

from __future__ import annotations

import argparse
import importlib

BENCHES = ["calls_import", "explain", "webhooks", "projections", "portal"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", choices=[*BENCHES, []], default=BENCHES)
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls to import")
    parser.add_argument("--invoices", type=int, default=argparse.SUPPRESS, help="invoices to build")
    args = parser.parse_args()
    for name in args.names or BENCHES:
        module = importlib.import_module(f"bench.{name}")
        module.main(args)


if __name__ == "__main__":
    main()
