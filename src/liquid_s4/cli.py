"""The `liquid-s4` command line.

    liquid-s4 train [PRESET] [--set key=value ...] [--data-dir DIR] [--max-steps N] [--max-epochs N]
                    [--output-dir DIR] [--resume] [--devices N] [--num-nodes N] [--accelerator A]
                    [--data PATH]
    liquid-s4 eval CHECKPOINT [--data-dir DIR | --data PATH]
    liquid-s4 presets [show NAME]
    liquid-s4 data check PRESET [--data-dir DIR] [--set key=value ...]   (validate a local copy, no training)
    liquid-s4 data list                                                 (dataset names)
    liquid-s4 stream MODEL --wav FILE [--chunk-ms 10] [--onnx | --fast] [--reset-ms MS | --window-ms MS]
                    [--sample-rate HZ] [--labels a,b,c] [--min-prob P] [--threads N] [--json]

With no PRESET, `train` runs the embedded default (Liquid-S4 on scikit-learn's digits, offline).
`liquid-s4 train --resume --output-dir RUN` continues RUN with the configuration it recorded (run.json).
`stream` runs a trained model (a run directory, a save_pretrained folder or an exported .onnx file) on a
WAV file chunk by chunk and prints each change of its decision, the real-time factor and the latency
per chunk (see `liquid_s4.deploy.runner`).
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="liquid-s4", description="Train and evaluate Liquid-S4 / S4 / S4D / LSSL sequence models."
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a preset (default: digits, offline) or a YAML config")
    t.add_argument(
        "preset", nargs="?", default=None, help="preset name (see `liquid-s4 presets`) or path to a YAML file"
    )
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config entry, e.g. --set optim.lr=0.01 --set model.layer_args.d_state=64",
    )
    t.add_argument("--data-dir", help="where the dataset's files are (data.data_dir)")
    t.add_argument(
        "--data",
        metavar="PATH",
        help="train on your own arrays: an .npz file (x, y), a folder with train.npz "
        "[val.npz, test.npz], or a .csv/.parquet file (sets data.name=arrays, data.data_dir=PATH); or on "
        "an archive problem's NAME_TRAIN.ts file, its NAME_TEST.ts beside it (sets data.name=uea)",
    )
    t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (trainer.max_steps)")
    t.add_argument("--max-epochs", type=int, help="trainer.max_epochs")
    t.add_argument(
        "--output-dir",
        help="run directory (default: a new runs/<dataset>-<time>-<random>); it must not hold "
        "files a run writes (config.yaml, run.json, checkpoints/, logs/, metrics.json, model/, curves.png)",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output-dir from its last checkpoint, with the "
        "run's own configuration; other flags may only extend it (--max-epochs, --max-steps) or change how "
        "it runs (--accelerator, --quiet, trainer.progress, trainer.log_every_n_steps, data.num_workers)",
    )
    t.add_argument("--devices", help="number of devices (trainer.devices)")
    t.add_argument("--num-nodes", type=int, help="trainer.num_nodes")
    t.add_argument("--accelerator", help="cpu, gpu, auto (trainer.accelerator)")
    t.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    e = sub.add_parser("eval", help="test metrics of a checkpoint")
    e.add_argument("checkpoint", help="a .ckpt file written by train, e.g. RUN/checkpoints/best.ckpt")
    e.add_argument("--data-dir", help="where the run's dataset is, if not where it was during training")
    e.add_argument(
        "--data",
        metavar="PATH",
        help="your own arrays or NAME_TRAIN.ts file (for a run trained with train --data), if not at the "
        "stored path",
    )
    d = sub.add_parser(
        "data", help="`data check PRESET --data-dir DIR` validates a local dataset copy; `data list`"
    )
    d.add_argument("action", choices=["check", "list"])
    d.add_argument("preset", nargs="?", help="preset name or YAML path (for check)")
    d.add_argument("--data-dir")
    d.add_argument(
        "--data", metavar="PATH", help="check your own arrays or a NAME_TRAIN.ts file (as for train --data)"
    )
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    pr = sub.add_parser("presets", help="list presets, or `presets show NAME`")
    pr.add_argument("action", nargs="?", choices=["show"])
    pr.add_argument("name", nargs="?")
    _stream_parser(sub)
    return p


def _stream_parser(sub) -> None:
    s = sub.add_parser(
        "stream",
        help="stream a WAV file through a trained model chunk by chunk; print its decisions and speed",
        description="Stream a WAV file through a trained model chunk by chunk, as a live input would "
        "arrive. The file is read whole, mixed down to mono and resampled once to the model's rate; "
        "then each chunk continues from the state the previous one left. A decision (time, class, "
        "probability) is printed whenever the most probable class at the end of a chunk changes; then "
        "the real-time factor (audio time / processing time) and the latency per chunk (median, p95, "
        "max: the model's time per chunk, after one warm-up chunk).",
    )
    s.add_argument(
        "model",
        help="a run directory, a save_pretrained folder (config.json + model.safetensors) or a .onnx file",
    )
    s.add_argument(
        "--wav", required=True, metavar="FILE", help="the WAV file (any sampling rate, mono or stereo)"
    )
    s.add_argument(
        "--chunk-ms",
        metavar="MS",
        type=float,
        help="chunk length in ms (default 10; an .onnx file streams with the chunk it was exported with)",
    )
    s.add_argument(
        "--onnx",
        action="store_true",
        help="export the model to ONNX with this chunk size and run it with onnxruntime "
        "(needs liquid-s4[deploy])",
    )
    s.add_argument(
        "--fast",
        action="store_true",
        help="run the model with the compiled per-sample path (numba: liquid-s4[fast]), the fastest for "
        "short chunks",
    )
    s.add_argument("--save-onnx", metavar="PATH", help="keep the exported .onnx file there (implies --onnx)")
    s.add_argument(
        "--sample-rate",
        metavar="HZ",
        type=int,
        help="the model's sampling rate in Hz (default: the run's or the .onnx metadata's, else 16000)",
    )
    s.add_argument(
        "--labels",
        metavar="A,B,...",
        help="class names, comma-separated (default: the run's or the .onnx metadata's, else indices)",
    )
    s.add_argument(
        "--reset-ms",
        metavar="MS",
        type=float,
        help="reset the model's whole state every MS milliseconds: each decision is then that of the model "
        "on the audio since the last reset (default: the run's clip length, e.g. 1000 for speech-commands, "
        "if it has one and no --window-ms/--decay-ms is given; 0: never)",
    )
    s.add_argument(
        "--window-ms",
        type=float,
        metavar="MS",
        help="mean pooling over the last MS milliseconds only (pool mean models)",
    )
    s.add_argument(
        "--decay-ms",
        metavar="MS",
        type=float,
        help="mean pooling with an exponential decay of time constant MS (pool mean models)",
    )
    s.add_argument(
        "--min-prob",
        metavar="P",
        type=float,
        default=0.0,
        help="print a changed decision only when its probability is at least this (default 0)",
    )
    s.add_argument(
        "--threads",
        metavar="N",
        type=int,
        default=1,
        help="torch or onnxruntime threads (default 1: a chunk of one stream is many small operations, "
        "which more threads slow down; try 2 for chunks of 100 ms or more)",
    )
    s.add_argument("--json", action="store_true", help="print one JSON object (decisions and timing) instead")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .train.checks import NonFiniteLossError

    try:
        return _run(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"liquid-s4 {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:  # the run failed (not the command line): status 1
        print(f"liquid-s4 {args.command}: error: {e}", file=sys.stderr)
        return 1


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
    if args.command == "data":
        return _data(args)
    if args.command == "stream":
        return _stream(args)
    if args.command == "eval":
        from .train.run import evaluate

        if args.data and args.data_dir:
            raise ValueError(
                "pass either --data PATH (your own arrays) or --data-dir DIR (a dataset's folder), not both"
            )
        if args.data and args.data.lower().endswith(".ts"):
            from .data.uea import train_test_files

            train_test_files(args.data)  # a clear error now if the name or the TEST file is wrong
        evaluate(args.checkpoint, data_dir=args.data or args.data_dir)
        return 0
    overrides = list(args.overrides)
    flags = {
        "data_dir": "data.data_dir",
        "max_steps": "trainer.max_steps",
        "max_epochs": "trainer.max_epochs",
        "devices": "trainer.devices",
        "num_nodes": "trainer.num_nodes",
        "accelerator": "trainer.accelerator",
    }
    for flag, key in flags.items():
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    overrides += _data_overrides(args)
    from .train.run import train

    if (
        args.resume
    ):  # the run's own stored configuration; flags given with --resume are checked against it by train()
        from .train.rundir import resume_config

        out = args.output_dir or (
            load_config(args.preset, overrides).trainer.output_dir if args.preset else None
        )
        if not out:
            raise ValueError("--resume needs the run's folder: --output-dir RUN")
        config = resume_config(out, overrides, args.preset)
    else:
        out, config = args.output_dir, load_config(args.preset, overrides)
    train(config, output_dir=out, resume=args.resume, quiet=args.quiet)
    return 0


def _data_overrides(args) -> list[str]:
    """--data PATH: your own arrays (dataset arrays), or an archive problem's NAME_TRAIN.ts file
    (dataset uea; its NAME_TEST.ts beside it)."""
    if not getattr(args, "data", None):
        return []
    if args.data_dir:
        raise ValueError(
            "pass either --data PATH (your own arrays) or --data-dir DIR (a preset's dataset), not both"
        )
    if args.data.lower().endswith(".ts"):
        from .data.uea import train_test_files

        train_test_files(args.data)  # a clear error now if the name or the TEST file is wrong
        return ["data.name=uea", f"data.data_dir={args.data}"]
    return ["data.name=arrays", f"data.data_dir={args.data}"]


def _stream(args) -> int:
    """`stream MODEL --wav FILE` (see `liquid_s4.deploy.runner`)."""
    import json

    from .deploy.runner import format_decision, format_result, stream_wav

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if not args.json:

        def show(decision):
            print(format_decision(decision), flush=True)

        def note(text):
            print(f"note: {text}", file=sys.stderr, flush=True)

    result = stream_wav(
        args.model,
        args.wav,
        chunk_ms=args.chunk_ms,
        onnx=args.onnx,
        fast=args.fast,
        save_onnx=args.save_onnx,
        sample_rate=args.sample_rate,
        labels=args.labels,
        reset_ms=args.reset_ms,
        window_ms=args.window_ms,
        decay_ms=args.decay_ms,
        min_prob=args.min_prob,
        threads=args.threads,
        on_decision=None if args.json else show,
        on_note=None if args.json else note,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_result(result, decisions=False))
    return 0


def _data(args) -> int:
    """`data list`, or `data check` (see `liquid_s4.data.check`)."""
    from .data.registry import dataset_names

    if args.action == "list":
        print("\n".join(dataset_names()))
        return 0
    if not args.preset and not args.data:
        raise ValueError("data check needs a PRESET (see `liquid-s4 presets`) or --data PATH")
    from .data.check import check_dataset
    from .train.config import load_config

    overrides = (
        list(args.overrides)
        + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
        + _data_overrides(args)
    )
    config = load_config(args.preset or "digits", overrides)
    check_dataset(config.data, seed=config.trainer.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
