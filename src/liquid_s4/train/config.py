"""Run configuration: presets (YAML shipped in the package, or a user's YAML file), `key=value`
overrides, and validation that names the valid keys and values."""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ..models.sequence import DATA_FIELDS, ModelConfig
from ..utils import is_positive_int

SCHEDULERS = ("cosine", "plateau", "multistep", "constant")
PRECISIONS = ("32", "64", "bf16-mixed", "16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
DEFAULT_PRESET = "digits"


@dataclass
class DataConfig:
    """name: the dataset; data_dir: where its files are (None: the dataset's default or none needed)."""

    name: str = "digits"
    data_dir: str | None = None
    batch_size: int = 64
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    num_workers: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """AdamW. SSM parameters use the layer's own lr (layer_args.lr) and no weight decay; norms and
    biases get no weight decay. warmup_steps: a number of steps, or a fraction (< 1) of all steps."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    scheduler: str = "cosine"
    warmup_steps: float = 0
    milestones: list[int] = field(default_factory=list)  # multistep: epochs at which lr *= gamma
    gamma: float = 0.5
    patience: int = 10  # plateau: epochs without improvement before lr *= gamma


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    max_steps: int = -1
    grad_clip: float = 0.0
    precision: str = "32"
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    output_dir: str | None = None
    log_every_n_steps: int = 10
    progress: bool = True
    tune_allocator: bool = True  # keep freed CPU memory for reuse (see liquid_s4.tune_cpu_allocator)


SECTIONS = {"data": DataConfig, "optim": OptimConfig, "trainer": TrainerConfig}


def run_model_config(**entries: Any) -> ModelConfig:
    """The model section of a run: a `ModelConfig` whose sizes (d_input, d_output, vocab_size) are
    left to the dataset (None until `ModelConfig.with_data_sizes` fills them when the model is built).
    Invalid entries raise the ModelConfig error."""
    return ModelConfig(**{**entries, **dict.fromkeys(DATA_FIELDS)})


@dataclass
class RunConfig:
    """A run's configuration: the dataset (`data`), the model (`model`, a `ModelConfig` whose input
    and output sizes the dataset fills in when the model is built), the optimizer (`optim`) and the
    trainer (`trainer`). `load_config` builds one from a preset and `key=value` overrides."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=run_model_config)  # sizes come from the dataset
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (run.json, config.yaml, the checkpoints' hyperparameters): every section in
        full, the model without the sizes the dataset decides."""
        d = dataclasses.asdict(self)
        d["model"] = {k: v for k, v in d["model"].items() if k not in DATA_FIELDS}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """A validated RunConfig from plain values: a preset or YAML file with overrides applied, or
        what `to_dict` wrote (also by earlier versions, whose model section holds only the entries
        that were set)."""
        d = dict(d or {})
        unknown = sorted(set(d) - {"data", "model", "optim", "trainer"})
        if unknown:
            raise ValueError(
                f"unknown config sections {unknown}; valid: ['data', 'model', 'optim', 'trainer']"
            )
        kwargs = {}
        for name in ("model", *SECTIONS):
            if not isinstance(d.get(name) or {}, dict):
                raise ValueError(
                    f"config section {name!r} must be a mapping of key: value entries, got {d[name]!r}"
                )
        for name, typ in SECTIONS.items():
            section = dict(d.get(name) or {})
            valid = [f.name for f in dataclasses.fields(typ)]
            bad = sorted(set(section) - set(valid))
            if bad:
                raise ValueError(
                    f"unknown keys {[f'{name}.{k}' for k in bad]}; valid keys in {name}: {valid}"
                )
            for f in dataclasses.fields(typ):
                if f.name in section:
                    section[f.name] = _check_number(f"{name}.{f.name}", f.type, section[f.name])
            kwargs[name] = typ(**section)
        model = dict(d.get("model") or {})
        valid_model = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in DATA_FIELDS]
        bad = sorted(set(model) - set(valid_model))
        if bad:
            raise ValueError(
                f"unknown keys {[f'model.{k}' for k in bad]}; valid keys in model: {valid_model} (d_input, "
                "d_output and vocab_size come from the data)"
            )
        cfg = cls(model=run_model_config(**model), **kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        o, t = self.optim, self.trainer
        if o.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown optim.scheduler {o.scheduler!r}; expected one of {SCHEDULERS}")
        if str(t.precision) not in PRECISIONS:
            raise ValueError(f"unknown trainer.precision {t.precision!r}; expected one of {PRECISIONS}")
        if o.lr <= 0 or o.weight_decay < 0 or o.warmup_steps < 0:
            raise ValueError(
                f"need optim.lr > 0, weight_decay >= 0, warmup_steps >= 0; got {o.lr}, {o.weight_decay}, "
                f"{o.warmup_steps}"
            )
        from ..data.registry import dataset_names

        if self.data.name not in dataset_names():
            raise ValueError(f"unknown data.name {self.data.name!r}; available: {dataset_names()}")
        if not isinstance(self.data.options, dict):
            raise ValueError(f"data.options must be a mapping of dataset options, got {self.data.options!r}")
        if self.data.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.data.batch_size}")
        if not (0 <= self.data.val_fraction < 1 and 0 <= self.data.test_fraction < 1):
            raise ValueError("data.val_fraction and data.test_fraction must lie in [0, 1)")
        if not isinstance(self.model, ModelConfig):
            raise ValueError(f"model must be a ModelConfig, got {type(self.model).__name__}")
        self.model.validate()
        self.trainer_checks()

    def trainer_checks(self) -> None:
        """The trainer settings Lightning would reject with a traceback (or, for max_steps=0, after
        an empty run): the limits, devices, nodes and accelerator name."""
        t = self.trainer
        for key, flag in (("max_steps", "--max-steps"), ("max_epochs", "--max-epochs")):
            v = getattr(t, key)
            if v is not None and v != -1 and v < 1:
                raise ValueError(
                    f"trainer.{key} ({flag}) must be a positive integer, or -1 for no limit; got {v}"
                )
        _check_devices(t.devices)
        if not is_positive_int(t.num_nodes):
            raise ValueError(
                f"trainer.num_nodes (--num-nodes) must be a positive integer; got {t.num_nodes!r}"
            )
        if str(t.accelerator) not in ACCELERATORS:
            raise ValueError(
                f"unknown trainer.accelerator (--accelerator) {t.accelerator!r}; expected one of "
                f"{ACCELERATORS}"
            )
        if t.grad_clip < 0 or t.log_every_n_steps < 1:
            raise ValueError(
                f"need trainer.grad_clip >= 0 and trainer.log_every_n_steps >= 1; got {t.grad_clip}, "
                f"{t.log_every_n_steps}"
            )


def _check_devices(v: Any) -> None:
    """trainer.devices as Lightning takes it: "auto", a positive count, -1 (all), or device indices
    (a list such as [0, 1], or the text "0,1")."""
    count = is_positive_int(v) or (isinstance(v, int) and v == -1)
    indices = (
        isinstance(v, list)
        and v
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
    )
    text = isinstance(v, str) and (v == "auto" or re.fullmatch(r"\d+(,\d+)*,?", v.strip()) is not None)
    if not (count or indices or text):
        raise ValueError(
            "trainer.devices (--devices) must be a positive number of devices (e.g. --devices 2), -1 for "
            f"all, 'auto', or a list of device indices such as [0, 1]; got {v!r}"
        )


def _check_number(key: str, annotation: str, value: Any) -> Any:
    """value of a field annotated int or float: a clear error for anything but a number (a float
    field also takes an int)."""
    if annotation not in ("int", "float"):
        return value
    ok = isinstance(value, int) if annotation == "int" else isinstance(value, (int, float))
    if not ok or isinstance(value, bool):
        raise ValueError(
            f"{key} must be {'an integer' if annotation == 'int' else 'a number'}, got {value!r}"
        )
    return value


def preset_names() -> list[str]:
    files = resources.files("liquid_s4") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in files.iterdir() if p.name.endswith(".yaml"))


def preset_text(name_or_path: str) -> str:
    """The YAML text of a shipped preset (by name) or of a YAML file (by path)."""
    if os.path.isfile(name_or_path):
        with open(name_or_path) as f:
            return f.read()
    if name_or_path.endswith((".yaml", ".yml")):
        raise FileNotFoundError(f"preset file {name_or_path} not found")
    path = resources.files("liquid_s4") / "presets" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(
            f"unknown preset {name_or_path!r}; available: {preset_names()} (or pass a path to a YAML file)"
        )
    return path.read_text()


def load_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Preset (default: the embedded digits task) plus `section.key=value` overrides (YAML values)."""
    name = preset or DEFAULT_PRESET
    source = name if os.path.isfile(name) else f"preset {name!r}"
    d = load_yaml(preset_text(name), source) or {}
    if not isinstance(d, dict):
        raise ValueError(
            f"{source}: a config is a mapping of sections (data:, model:, optim:, trainer:), got "
            f"{type(d).__name__} {d!r}"
        )
    return RunConfig.from_dict(apply_overrides(d, overrides))


def load_yaml(text: str, source: str = "the YAML text") -> Any:
    """yaml.safe_load, except that numbers in exponent notation without a decimal point (1e-3,
    5E+4) are floats, as in YAML 1.2 and Python; PyYAML's YAML 1.1 rules read them as strings.
    Invalid YAML raises a ValueError naming `source` (e.g. the file) and the line and column."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())
    except yaml.YAMLError as e:
        raise ValueError(_yaml_error(source, e)) from None


def _yaml_error(source: str, e) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e)
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    also = f" ({context} started at line {cmark.line + 1})" if context and cmark is not None else ""
    return (
        f"{source} is not valid YAML{where}: {problem}{also}. Fix it (YAML: `key: value`, lists `[a, b]`, "
        f"mappings `{{k: v}}`)" + (_pointer(mark) if mark is not None else "")
    )


def _pointer(mark) -> str:
    """The offending line with a caret under the column."""
    lines = (mark.buffer or "").rstrip("\0").splitlines()
    return f"\n    {lines[mark.line]}\n    {' ' * mark.column}^" if 0 <= mark.line < len(lines) else ""


@functools.cache
def _loader():
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    pattern = r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"""
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(pattern), list("-+.0123456789"))
    return Loader


def apply_overrides(d: dict[str, Any], overrides) -> dict[str, Any]:
    d = copy.deepcopy(d)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(
                f"override {item!r} is not key=value (e.g. optim.lr=0.01 or model.layer_args.d_state=64)"
            )
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = load_yaml(value, f"override {item!r}: the value")
    return d
