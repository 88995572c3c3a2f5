"""The `liquid-s4` command line.

    liquid-s4 train [PRESET] [--set key=value ...] [--data-dir DIR] [--max-steps N] [--max-epochs N]
                    [--output-dir DIR] [--resume] [--devices N] [--num-nodes N] [--accelerator A]
    liquid-s4 eval CHECKPOINT [--data-dir DIR]
    liquid-s4 presets [show NAME]

With no PRESET, `train` runs the embedded default (Liquid-S4 on scikit-learn's digits, offline).
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liquid-s4", description="Train and evaluate Liquid-S4 / S4 / S4D / LSSL sequence models.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a preset (default: digits, offline) or a YAML config")
    t.add_argument("preset", nargs="?", default=None, help="preset name (see `liquid-s4 presets`) or path to a YAML file")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set optim.lr=0.01 --set model.layer_args.d_state=64")  # fmt: skip
    t.add_argument("--data-dir", help="where the dataset's files are (data.data_dir)")
    t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (trainer.max_steps)")
    t.add_argument("--max-epochs", type=int, help="trainer.max_epochs")
    t.add_argument("--output-dir", help="run directory (default: runs/<dataset>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    t.add_argument("--devices", help="number of devices (trainer.devices)")
    t.add_argument("--num-nodes", type=int, help="trainer.num_nodes")
    t.add_argument("--accelerator", help="cpu, gpu, auto (trainer.accelerator)")
    t.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    e = sub.add_parser("eval", help="test metrics of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data-dir")
    pr = sub.add_parser("presets", help="list presets, or `presets show NAME`")
    pr.add_argument("action", nargs="?", choices=["show"])
    pr.add_argument("name", nargs="?")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"liquid-s4 {args.command}: error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from .train.config import load_config, preset_names, preset_text

    if args.command == "presets":
        if args.action == "show":
            if not args.name:
                raise ValueError("presets show needs a NAME; available: " + ", ".join(preset_names()))
            print(preset_text(args.name), end="")
        else:
            print("\n".join(preset_names()))
        return 0
    if args.command == "eval":
        from .train.run import evaluate

        evaluate(args.checkpoint, data_dir=args.data_dir)
        return 0
    overrides = list(args.overrides)
    flags = {"data_dir": "data.data_dir", "max_steps": "trainer.max_steps", "max_epochs": "trainer.max_epochs",
             "devices": "trainer.devices", "num_nodes": "trainer.num_nodes", "accelerator": "trainer.accelerator"}
    for flag, key in flags.items():
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    config = load_config(args.preset, overrides)
    from .train.run import train

    train(config, output_dir=args.output_dir, resume=args.resume, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
