import pytest

from liquid_s4.train.config import (
    RunConfig,
    apply_overrides,
    load_config,
    load_yaml,
    preset_names,
    preset_text,
)


def test_default_preset_and_overrides():
    cfg = load_config(
        None, ["optim.lr=0.01", "model.layer_args.d_state=8", "trainer.max_epochs=3", "model.norm=batch"]
    )
    assert cfg.data.name == "digits" and cfg.optim.lr == 0.01 and cfg.trainer.max_epochs == 3
    assert cfg.model.layer_args["d_state"] == 8 and cfg.model.layer_args["liquid_kernel"] == "pb"
    assert cfg.model.norm == "batch"
    assert "digits" in preset_names() and "liquid_kernel: pb" in preset_text("digits")


def test_yaml_file_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("data: {name: digits, batch_size: 7}\nmodel: {d_model: 8, n_layers: 1}\n")
    cfg = load_config(str(path))
    assert cfg.data.batch_size == 7 and cfg.model.n_layers == 1


def test_exponent_notation_is_a_number(tmp_path):
    """1e-3 is a float in overrides and preset files (PyYAML's YAML 1.1 rules would read a string)."""
    cfg = load_config(None, ["optim.lr=1e-3", "model.layer_args.dt_min=2E-4", "optim.weight_decay=.5e-1"])
    assert cfg.optim.lr == 1e-3 and cfg.model.layer_args["dt_min"] == 2e-4 and cfg.optim.weight_decay == 0.05
    path = tmp_path / "mine.yaml"
    path.write_text("optim: {lr: 5e-4, scheduler: cosine}\nmodel: {layer_args: {dt_max: 1e-1}, layer: e5}\n")
    d = load_yaml(path.read_text())
    assert (
        d["optim"]["lr"] == 5e-4 and d["model"]["layer_args"]["dt_max"] == 0.1 and d["model"]["layer"] == "e5"
    )
    assert load_config(None, ["trainer.output_dir=1e", "data.data_dir=run-1e5"]).trainer.output_dir == "1e"


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["optim.lrr=1"], r"unknown keys \['optim.lrr'\]; valid keys in optim: \['lr'"),
        (["model.dmodel=3"], r"unknown keys \['model.dmodel'\]; valid keys in model"),
        (["optim.scheduler=linear"], r"unknown optim.scheduler 'linear'; expected one of \('cosine'"),
        (["model.layer=rnn"], r"unknown layer 'rnn'"),
        (["extra.x=1"], r"unknown config sections \['extra'\]"),
        (["trainer.precision=8"], r"unknown trainer.precision"),
        (["optim.lr"], r"is not key=value"),
        (["optim.lr=fast"], r"optim.lr must be a number, got 'fast'"),
        (["data.batch_size=2.5"], r"data.batch_size must be an integer, got 2.5"),
        (["trainer.max_epochs=true"], r"trainer.max_epochs must be an integer, got True"),
    ],
)
def test_invalid_values_name_the_valid_ones(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, overrides)


def test_unknown_preset_lists_available():
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; available: \[.*'digits'"):
        load_config("nope")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_config("missing.yaml")


def test_round_trip():
    cfg = load_config()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}


def test_the_model_section_is_a_model_config_whose_sizes_come_from_the_data():
    from liquid_s4 import ModelConfig

    cfg = load_config(None, ["model.d_model=8"])
    assert isinstance(cfg.model, ModelConfig) and cfg.model.d_model == 8
    assert (cfg.model.d_input, cfg.model.d_output, cfg.model.vocab_size) == (None, None, None)
    assert isinstance(RunConfig().model, ModelConfig) and RunConfig().model.d_input is None
    written = cfg.to_dict()["model"]
    assert written["d_model"] == 8 and written["norm"] == "layer"
    assert not {"d_input", "d_output", "vocab_size"} & set(written)
    cfg.model.dropout = 1.5  # edits are checked again by validate
    with pytest.raises(ValueError, match="dropout must be in"):
        cfg.validate()
    with pytest.raises(ValueError, match=r"unknown keys \['model.d_input'\].*come from the data"):
        load_config(None, ["model.d_input=3"])


def _previous_version_config():
    """A run configuration as the previous version wrote it (run.json "config", config.yaml, the
    checkpoints' hyper_parameters "config"): the model section held only the entries that were set."""
    import dataclasses

    from liquid_s4.train.config import DataConfig, OptimConfig, TrainerConfig

    return {
        "data": dataclasses.asdict(DataConfig(batch_size=16)),
        "model": {"d_model": 8, "n_layers": 1, "layer_args": {"d_state": 4, "liquid_kernel": "pb"}},
        "optim": dataclasses.asdict(OptimConfig(lr=0.01)),
        "trainer": dataclasses.asdict(TrainerConfig(max_epochs=2, progress=False)),
    }


def test_configurations_written_by_the_previous_version_load(tmp_path):
    """run.json, config.yaml and a checkpoint's hyperparameters as the previous version wrote them
    load as the same configuration, with no difference that --resume would refuse."""
    import json

    import yaml

    from liquid_s4.train import rundir
    from liquid_s4.train.config import DataConfig, OptimConfig, TrainerConfig, run_model_config
    from liquid_s4.train.module import LitSequenceModel

    old = _previous_version_config()
    cfg = RunConfig.from_dict(old)
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.model.layer_args["d_state"]) == (8, 1, 4)
    assert cfg.model.layer == "liquid_s4" and cfg.model.d_input is None
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert rundir.config_differences(cfg, load_config(None, [])) != []
    typed = RunConfig(
        data=DataConfig(batch_size=16),
        model=run_model_config(d_model=8, n_layers=1, layer_args={"d_state": 4, "liquid_kernel": "pb"}),
        optim=OptimConfig(lr=0.01),
        trainer=TrainerConfig(max_epochs=2, progress=False),
    )
    assert cfg == typed and rundir.config_differences(cfg, typed) == []
    # config.yaml (with its comment line) as a preset file
    path = tmp_path / "config.yaml"
    path.write_text("# the run's resolved configuration\n" + yaml.safe_dump(old, sort_keys=False))
    assert load_config(str(path)) == cfg
    # run.json
    record = {"format": rundir.RECORD_FORMAT, "version": 1, "created": None, "config": old, "finished": None}
    (tmp_path / "run.json").write_text(json.dumps(record))
    assert rundir.stored_config(str(tmp_path)) == cfg
    # a checkpoint's hyperparameters
    info = {"d_input": 2, "d_output": 3, "task": "classification", "vocab_size": None}
    lit = LitSequenceModel.from_hyperparameters(
        {"config": old, "info": {**info, "description": "", "extra": {}}}
    )
    assert lit.run_config == cfg and lit.info.d_input == 2
    m = lit.model.config
    assert (m.d_input, m.d_output, m.vocab_size, m.d_model, m.layer_args["d_state"]) == (2, 3, None, 8, 4)
