"""`python -m training build | verify | report | inspect` (docs/training.md).

Exit codes: 0 done (for `verify`: the dataset verifies); 1 `verify` found problems; 2 the
input or the command line was refused, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from training.build import build, default_cache_dir
from training.config import load_config
from training.loader import load
from training.manifest import read_manifest
from training.progress import Progress
from training.report import format_report
from training.timeline import InputError
from training.verify import verify


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Build, verify and inspect MotionMix's paired audio+pose datasets.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    b = commands.add_parser("build", help="build a dataset from bundles and folders")
    b.add_argument("inputs", nargs="+", help="session bundles (folder or .zip), paired folders")
    b.add_argument("--out", required=True, type=Path, help="new or empty output folder")
    b.add_argument("--config", type=Path, help="JSON settings overriding the defaults")
    b.add_argument("--cache", type=Path, help="decoded-audio cache (default: ~/.cache/…)")
    b.add_argument("--quiet", action="store_true", help="no progress on stderr")
    b.set_defaults(run=_build)

    v = commands.add_parser("verify", help="re-hash a dataset and re-derive its id")
    v.add_argument("dataset", type=Path)
    v.set_defaults(run=_verify)

    r = commands.add_parser("report", help="metrics and the promotion decision")
    r.add_argument("dataset", type=Path)
    r.add_argument("--json", action="store_true", help="the summary as JSON")
    r.set_defaults(run=_report)

    i = commands.add_parser("inspect", help="splits, shards, shapes and a sample window")
    i.add_argument("dataset", type=Path)
    i.add_argument("--window", help="the window id to show (default: the first)")
    i.set_defaults(run=_inspect)
    return parser


def _build(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    manifest = build(
        args.inputs,
        args.out,
        config,
        cache_dir=args.cache or default_cache_dir(),
        progress=Progress(quiet=args.quiet),
        config_given=args.config is not None,
    )
    summary = manifest["summary"]
    print(f"dataset id {manifest['dataset_id']}")
    print(f"run id     {manifest['run_id']}")
    print(
        f"{summary['windows']['kept']} windows kept, {summary['windows']['dropped']} dropped, "
        f"from {summary['pairs']} pairs; promotion: {summary['promotion']['decision']}"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    result = verify(args.dataset)
    for problem in result.problems:
        print(f"FAIL {problem}")
    absent = (
        f", {len(result.inputs_absent)} not found (not checked)" if result.inputs_absent else ""
    )
    print(
        f"{'OK' if result.ok else 'FAILED'}: dataset {result.dataset_id}, "
        f"{result.files_checked} files re-hashed, {result.inputs_checked} inputs re-hashed{absent}"
    )
    return 0 if result.ok else 1


def _report(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.dataset)
    if args.json:
        print(json.dumps(manifest["summary"], indent=1, sort_keys=True))
    else:
        sys.stdout.write(format_report(manifest))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    dataset = load(args.dataset)
    manifest = dataset.manifest
    print(f"dataset {manifest['dataset_id']}  ({len(dataset)} windows)")
    for name, split in sorted(manifest["splits"].items()):
        print(
            f"  {name}: {split['windows']} windows in {len(split['shards'])} shards, "
            f"sources {', '.join(split['sources']) or '–'}"
        )
    sample = None
    for window in dataset:
        if args.window is None or window.window_id == args.window:
            sample = window
            break
    if sample is None:
        print("no window" + (f" {args.window}" if args.window else ""))
        return 0 if args.window is None else 2
    print(f"window {sample.window_id} ({sample.split}), audio frames from {sample.start_frame}")
    for key in ("audio", "positions", "velocities", "kinetic", "conf", "missing"):
        array = getattr(sample, key)
        print(
            f"  {key:<10} {array.shape!s:<14} {array.dtype}  "
            f"min {np.min(array):.4g} max {np.max(array):.4g} mean {np.mean(array):.4g}"
        )
    names = manifest["features"]["audio"]
    print(
        "  audio[0]   "
        + ", ".join(f"{n}={v:.3g}" for n, v in zip(names[:6], sample.audio[0], strict=False))
        + ", …"
    )
    print(
        f"  missing frames {int(sample.missing.sum())} of {sample.missing.shape[0]}; "
        f"kinetic energy mean {float(sample.kinetic.mean()):.4g}"
    )
    return 0
