"""A run's folder: what a run may write where, its record, and what `--resume` may change.

Rules (see `train.run.train`):

* A new run writes only into a folder that holds none of the names in `RUN_FILES`; anything else in
  it is left alone. It claims the folder by creating `run.json` exclusively (two runs started at once
  in the same folder: one of them gets a clear error), so every file listed there belongs to the run.
* Without --output-dir the folder is `runs/<dataset>-<date>-<time>-<random>`, created with
  `os.makedirs(exist_ok=False)` and a new suffix on collision: unique even for simultaneous starts.
* `run.json` records the run's resolved configuration (data paths made absolute) and, once training
  ends, how far it got. `--resume` continues from that record, not from the command line's defaults;
  settings given with it may differ from the record only in `RESUMABLE_KEYS`.
* logs/metrics.csv keeps the rows of every segment (`MetricsCSV`), and the checkpoints carry the
  wall time of each segment (`RunClock`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import time
from datetime import datetime
from typing import Any

from ..fileio import atomic_write_json, atomic_write_text
from .config import RunConfig, apply_overrides, load_config
from .pl import L

RUN_RECORD = "run.json"
RUN_FILES = (RUN_RECORD, "config.yaml", "checkpoints", "logs", "curves.png", "metrics.json", "model")
RECORD_FORMAT = "liquid-s4 run"
# settings that --resume may change; every other one must equal the run's record
RESUMABLE_KEYS = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.progress",
    "trainer.log_every_n_steps",
    "trainer.tune_allocator",
    "trainer.accelerator",
    "trainer.output_dir",
    "data.num_workers",
)
RUN_DIR_ENV = "LIQUID_S4_RUN_DIR"  # the folder rank 0 chose, for the processes a multi-device run starts


def process_rank() -> int:
    """This process's rank in a multi-process run (0 when alone), as Lightning reads it from the
    environment."""
    return int(getattr(L.pytorch.utilities.rank_zero_only, "rank", 0) or 0)


def absolute_paths(config: RunConfig) -> RunConfig:
    """`config` with data.data_dir absolute (a relative path is taken from the current directory), so
    that the run's record finds the data from any working directory."""
    d = config.to_dict()
    if d["data"]["data_dir"]:
        d["data"]["data_dir"] = os.path.abspath(os.path.expanduser(str(d["data"]["data_dir"])))
    return RunConfig.from_dict(d)  # also validates a config built in code


# ---- the run record -------------------------------------------------------------------------


def read_record(out: str) -> dict[str, Any] | None:
    """The run.json of `out`, or None if there is none."""
    path = os.path.join(out, RUN_RECORD)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{path} cannot be read ({e}); it records the run's configuration. Restore it, or start a new run"
        ) from e
    if (
        not isinstance(record, dict)
        or record.get("format") != RECORD_FORMAT
        or not isinstance(record.get("config"), dict)
    ):
        raise ValueError(
            f"{path} is not a liquid-s4 run record; restore it, or start a new run in another --output-dir"
        )
    return record


def write_record(out: str, record: dict[str, Any]) -> None:
    atomic_write_json(os.path.join(out, RUN_RECORD), record)


def write_config_yaml(out: str, config: RunConfig) -> None:
    import yaml

    text = "# the run's resolved configuration, for reading: --resume uses run.json\n" + yaml.safe_dump(
        config.to_dict(), sort_keys=False
    )
    atomic_write_text(os.path.join(out, "config.yaml"), text)


def stored_config(out: str) -> RunConfig:
    """The configuration the run in `out` trains with: its run.json, or for a run written before
    run.json existed, the configuration saved in its last.ckpt."""
    record = read_record(out)
    if record is not None:
        return RunConfig.from_dict(record["config"])
    last = os.path.join(out, "checkpoints", "last.ckpt")
    if not os.path.isfile(last):
        raise FileNotFoundError(
            f"--resume: {out} holds no run ({RUN_RECORD} and checkpoints/last.ckpt not found); pass the "
            "run's folder as --output-dir, or start without --resume"
        )
    from .checkpoint import load_checkpoint

    return RunConfig.from_dict(load_checkpoint(last)["hyper_parameters"]["config"])


def resume_config(out: str, overrides=(), preset: str | None = None) -> RunConfig:
    """The configuration given for resuming the run in `out`: its stored configuration with the
    `key=value` overrides applied, or, when a preset is named, that preset with the overrides.
    `train(..., resume=True)` refuses it where it differs from the stored one outside RESUMABLE_KEYS."""
    if preset is not None:
        return load_config(preset, overrides)
    return RunConfig.from_dict(apply_overrides(stored_config(out).to_dict(), overrides))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _resolved(config: RunConfig) -> dict[str, Any]:
    """config as a flat dict, with the model's defaults filled in (an entry given explicitly with its
    default value is no difference)."""
    return _flat(config.to_dict())


def config_differences(stored: RunConfig, given: RunConfig) -> list[tuple[str, Any, Any]]:
    """(key, stored value, given value) for every setting that differs; "<unset>" where one side
    lacks the key."""
    a, b = _resolved(stored), _resolved(given)
    unset = "<unset>"
    return [
        (k, a.get(k, unset), b.get(k, unset))
        for k in sorted(set(a) | set(b))
        if a.get(k, unset) != b.get(k, unset)
    ]


def check_resume(out: str, given: RunConfig) -> RunConfig:
    """The configuration to resume the run in `out` with: `given`, if it differs from the run's stored
    configuration only in RESUMABLE_KEYS and, for a run that already finished, trains it further.
    Raises ValueError listing the differences otherwise; nothing on disk is changed."""
    stored = stored_config(out)
    conflicts = [d for d in config_differences(stored, given) if d[0] not in RESUMABLE_KEYS]
    if conflicts:
        lines = "\n".join(f"  {k}: {a!r} (stored) vs {b!r} (given)" for k, a, b in conflicts)
        raise ValueError(
            f"--resume: these settings differ from the run in {out}:\n{lines}\nA resumed run keeps its own "
            f"configuration: leave them out (`liquid-s4 train --resume --output-dir {out}` continues the run "
            f"as it was) or start a new run. --resume may change only: {', '.join(RESUMABLE_KEYS)}."
        )
    finished = (read_record(out) or {}).get("finished")
    if finished and not _trains_further(given.trainer, finished):
        raise ValueError(
            f"--resume: the run in {out} already finished ({finished['epochs']} epochs, "
            f"{finished['global_step']} steps; trainer.max_epochs={given.trainer.max_epochs}, "
            f"trainer.max_steps={given.trainer.max_steps}); to train it longer pass a larger --max-epochs "
            "(or --max-steps). Nothing was changed."
        )
    return given


def _trains_further(t, finished: dict[str, Any]) -> bool:
    more_steps = t.max_steps is None or t.max_steps < 0 or t.max_steps > finished["global_step"]
    more_epochs = t.max_epochs is None or t.max_epochs < 0 or t.max_epochs > finished["epochs"]
    return more_steps and more_epochs


def missing_checkpoint_error(out: str) -> FileNotFoundError:
    last = os.path.join(out, "checkpoints", "last.ckpt")
    if os.path.isfile(os.path.join(out, "metrics.json")):
        best = os.path.join(out, "checkpoints", "best.ckpt")
        how = (
            f"copy {best} to {last} and --resume (it continues from the best epoch), or "
            if os.path.isfile(best)
            else ""
        )
        return FileNotFoundError(
            f"--resume: the run in {out} finished but its {last} is gone; its files were left as they are. "
            f"To train further, {how}start a new run with another --output-dir"
        )
    if os.path.isfile(os.path.join(out, RUN_RECORD)):
        return FileNotFoundError(
            f"--resume: the run in {out} stopped before its first checkpoint ({last}): there is nothing to "
            f"continue. Remove that folder (rm -r {out}) and start the run again"
        )
    return FileNotFoundError(
        f"--resume: no checkpoint at {last}; start without --resume or pass the run's --output-dir"
    )


# ---- the output folder of a new run ----------------------------------------------------------


def check_new_output_dir(out: str) -> None:
    """Refuse a folder for a new run if it holds any name the run writes (RUN_FILES): never
    overwrite a file the run did not create. Nothing is written."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--output-dir {out} is a file, not a folder; choose another --output-dir")
    found = [n for n in RUN_FILES if os.path.lexists(os.path.join(out, n))]
    if not found:
        return
    last = os.path.join(out, "checkpoints", "last.ckpt")
    if os.path.isfile(last):
        msg = (
            f"{out} already holds a run ({last}); pass --resume to continue it (liquid-s4 train --resume "
            f"--output-dir {out})"
        )
    elif os.path.isfile(os.path.join(out, "metrics.json")) and (
        RUN_RECORD in found or "checkpoints" in found
    ):
        msg = (
            f"{out} holds a finished run whose checkpoints/last.ckpt is gone; its files (metrics.json, "
            "model/, best.ckpt) were left as they are"
        )
    elif RUN_RECORD in found:
        msg = (
            f"{out} holds a run that stopped before its first checkpoint; remove that folder (rm -r {out}) "
            "if you no longer need it"
        )
    else:
        msg = (
            f"{out} already holds {', '.join(found)}, which a run would overwrite (a run writes "
            f"{', '.join(RUN_FILES)})"
        )
    raise FileExistsError(f"{msg}. Nothing was written; choose another --output-dir (e.g. a new folder)")


def create_run_dir(out: str | None, config: RunConfig) -> str:
    """Create the run's folder (`out`, or a new unique one under runs/), claim it by creating
    run.json exclusively, and write the record and config.yaml. Returns the folder."""
    if out is None:
        out = _new_default_dir(config.data.name)
    else:
        check_new_output_dir(out)
        os.makedirs(out, exist_ok=True)
    try:
        with open(os.path.join(out, RUN_RECORD), "x"):
            pass
    except FileExistsError:
        raise FileExistsError(
            f"{out} was claimed by another run started at the same time; choose another --output-dir"
        ) from None
    created = datetime.now().isoformat(timespec="seconds")
    write_record(
        out,
        {
            "format": RECORD_FORMAT,
            "version": 1,
            "created": created,
            "config": config.to_dict(),
            "finished": None,
        },
    )
    write_config_yaml(out, config)
    return out


def _new_default_dir(name: str) -> str:
    for _ in range(100):
        out = os.path.join(
            "runs", f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        )
        try:
            os.makedirs(out, exist_ok=False)
            return out
        except FileExistsError:
            continue
    raise FileExistsError("could not create a new folder under runs/; pass --output-dir")


def remove_stale_temporaries(out: str) -> None:
    """Delete the temporary files an interrupted atomic write left in the run's folder (`.tmp-*`)."""
    for d in (out, os.path.join(out, "checkpoints"), os.path.join(out, "model")):
        if os.path.isdir(d):
            for f in os.listdir(d):
                if f.startswith(".tmp-") and os.path.isfile(os.path.join(d, f)):
                    os.remove(os.path.join(d, f))


# ---- logs and timing kept across segments ----------------------------------------------------


class MetricsCSV(L.pytorch.loggers.Logger):
    """logs/metrics.csv, a row per logging call (step, epoch and the logged values). Across --resume
    the rows of earlier segments are kept up to the step training resumes from (`keep_before`); rows
    logged after that step by an interrupted segment are dropped, since that work is done again.
    Every write replaces the whole file atomically; nothing is written while `hold` is set."""

    def __init__(self, path: str, flush_every: int = 100):
        super().__init__()
        self.path, self.flush_every, self.unsaved, self.hold = path, flush_every, 0, False
        self.rows: list[dict[str, Any]] = []
        if os.path.isfile(path):
            with open(path, newline="", encoding="utf-8") as f:
                self.rows = list(csv.DictReader(f))

    @property
    def name(self) -> str:
        return "logs"

    @property
    def version(self) -> str:
        return ""

    def keep_before(self, step: int) -> None:
        """Drop the earlier rows logged at `step` or later."""
        self.rows = [r for r in self.rows if r.get("step") in ("", None) or int(float(r["step"])) < step]

    @L.pytorch.utilities.rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the run's configuration is in run.json and config.yaml

    @L.pytorch.utilities.rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
        row["step"] = len(self.rows) if step is None else step
        self.rows.append(row)
        self.unsaved += 1

    @L.pytorch.utilities.rank_zero_only
    def save(self) -> None:
        if self.unsaved >= self.flush_every:
            self.write()

    @L.pytorch.utilities.rank_zero_only
    def finalize(self, status: str) -> None:
        if self.unsaved:
            self.write()

    def write(self) -> None:
        if self.hold:  # a resumed segment before its first checkpoint (see ResumeStart)
            return
        keys = sorted({k for r in self.rows for k in r})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        atomic_write_text(self.path, buf.getvalue())
        self.unsaved = 0


class FlushLogs(L.Callback):
    """Writes metrics.csv whenever a checkpoint is saved and at the start of every epoch (after the
    previous epoch's training averages are logged, which Lightning does after the epoch's checkpoint),
    so that a killed run loses no row of the work its checkpoint keeps, except when it dies between
    writing last.ckpt and the start of the next epoch: then that epoch's training averages are lost."""

    def __init__(self, logger: MetricsCSV):
        self.logger = logger

    def _write(self, trainer) -> None:
        if trainer.is_global_zero:
            self.logger.write()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self._write(trainer)

    def on_train_epoch_start(self, trainer, pl_module):
        self._write(trainer)

    def on_train_end(self, trainer, pl_module):
        self._write(trainer)


class RunClock(L.Callback):
    """Wall time of every training segment (the first start and each --resume), from the start of
    training to the newest checkpoint, kept in the checkpoints under `liquid_s4_segments`: the total
    counts the work a run kept, not the part an interrupted segment lost after its last checkpoint."""

    KEY = "liquid_s4_segments"

    def __init__(self):
        self.earlier: list[dict[str, Any]] = []
        self.start, self.started, self.first_step, self.saved = None, None, 0, None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self.earlier = list(checkpoint.get(self.KEY, []))

    def on_train_start(self, trainer, pl_module):
        self.start, self.first_step = time.perf_counter(), trainer.global_step
        self.started = datetime.now().isoformat(timespec="seconds")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint[self.KEY] = self.saved = self.segments(trainer)

    def final(self, trainer) -> list[dict[str, Any]]:
        """The segments as of the newest checkpoint (what a later --resume continues from)."""
        return self.saved if self.saved is not None else self.segments(trainer)

    def segments(self, trainer) -> list[dict[str, Any]]:
        if self.start is None:
            return list(self.earlier)
        now = {
            "started": self.started,
            "wall_time_s": round(time.perf_counter() - self.start, 3),
            "steps": [self.first_step, trainer.global_step],
        }
        return [*self.earlier, now]


class ResumeStart(L.Callback):
    """A resumed segment changes nothing on disk until it has made progress: after the checkpoint is
    restored the earlier metrics.csv rows are trimmed to the restored step (in memory), and only when
    the segment's first checkpoint is saved are the record (extended configuration, no longer
    finished) and config.yaml updated, the temporary files an interrupted write left removed, and
    metrics.csv written again. A resume that fails before its first checkpoint leaves every file as it was."""

    def __init__(self, out: str, config: RunConfig, logger: MetricsCSV):
        self.out, self.config, self.logger, self.saved = out, config, logger, False
        logger.hold = True

    def on_train_start(self, trainer, pl_module):
        self.logger.keep_before(trainer.global_step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.saved:
            return
        self.saved, self.logger.hold = True, False
        if trainer.is_global_zero:
            remove_stale_temporaries(self.out)
            record = read_record(self.out)
            if record is None:  # a run from before run.json: it gets one now
                record = {
                    "format": RECORD_FORMAT,
                    "version": 1,
                    "created": None,
                    "config": None,
                    "finished": None,
                }
            changed = record["config"] != self.config.to_dict()
            if changed or record.get("finished"):
                record.update(config=self.config.to_dict(), finished=None)
                write_record(self.out, record)
            if changed:
                write_config_yaml(self.out, self.config)


def record_finished(out: str, epochs: int, global_step: int) -> None:
    record = read_record(out)
    if record is not None:
        record["finished"] = {"epochs": epochs, "global_step": global_step}
        write_record(out, record)
