"""`kernelfit plan`: where a run's K will live, its bytes and expected time, before the run."""

from __future__ import annotations

import json

EXAMPLES = """examples:
  kernelfit plan                                             the default run (digits)
  kernelfit plan --dataset mnist
  kernelfit plan --dataset mnist --memory-limit 8GB          # K spills to disk tiles
  kernelfit plan --dataset mnist --backend torch --device-memory 10GB
"""


def register(sub) -> None:
    from kernelfit.cli import HelpFormatter
    from kernelfit.cli.settings import RUN_SETTINGS, add_settings

    p = sub.add_parser(
        "plan", help="say what a run will do (where K lives, bytes, expected time) without "
                     "doing it",
        description="Take the arguments of `kernelfit run` and print the planner's decisions:\n"
                    "dtype, backend and device, whether K is kept in memory, in tiles on\n"
                    "disk or streamed through a GPU, the bytes on each side, and the expected\n"
                    "Gram and factor times from this machine's GEMM rate measured now. Exit\n"
                    "status 2, with the ways out, when the run cannot fit.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    add_settings(p, RUN_SETTINGS, feature_params=True)
    p.add_argument("--json", metavar="PATH", default=None, help="also write the plan as JSON")
    p.set_defaults(func=main, quiet=True)


def main(args) -> int:
    from kernelfit.atomic import write_text_atomic
    from kernelfit.cli.settings import run_config
    from kernelfit.pipeline.explain import explain, render
    from kernelfit.pipeline.outputs import check_outputs

    check_outputs({"--json": args.json}, datasets=[args.dataset], data_home=args.data_home)
    info = explain(run_config(args))
    print(render(info))
    if args.json:
        write_text_atomic(args.json, json.dumps(info, indent=1, default=str) + "\n")
        print(f"plan written to {args.json}")
    return 0
