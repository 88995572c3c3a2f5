"""Every paper preset carries the hyperparameters of the paper's public configs (the table below is
the one in the presets issue), and trains for two steps on fixture data written in its real format."""

import os
import shutil

import pytest

from liquid_s4.train.config import load_config, preset_names

# preset: d_model, layers, d_state, norm, prenorm, dropout, lr, wd, batch, epochs, ssm lr, dt_min, dt_max,
# bidir, pool/head, degree
TABLE = {
    "lra-listops": (128, 9, 8, "batch", True, 0.01, 0.002, 0.03, 12, 40, 9e-4, 0.002, 0.2, False, "mean", 3),
    "lra-text": (128, 4, 8, "batch", True, 0.1, 0.003, 0.01, 8, 50, 9e-4, 0.002, 0.2, False, "mean", 2),
    "lra-retrieval": (
        256,
        6,
        64,
        "batch",
        True,
        0.2,
        0.005,
        0.05,
        16,
        20,
        1e-3,
        0.001,
        0.1,
        False,
        "retrieval",
        2,
    ),
    "lra-image": (512, 6, 512, "layer", False, 0.1, 0.01, 0.03, 50, 200, 1e-3, 0.002, 0.2, True, "mean", 2),
    "lra-pathfinder": (
        256,
        6,
        64,
        "batch",
        True,
        0.0,
        0.004,
        0.03,
        4,
        200,
        1e-3,
        0.001,
        0.1,
        False,
        "last",
        2,
    ),
    "lra-pathx": (320, 6, 64, "batch", True, 0.0, 0.001, 0.05, 8, 60, 5e-4, 1e-4, 0.1, False, "mean", 2),
    "scifar": (512, 6, 64, "layer", False, 0.1, 0.01, 0.05, 50, 200, 1e-3, 0.001, 0.1, True, "mean", 3),
    "speech-commands": (
        128,
        6,
        8,
        "batch",
        True,
        0.0,
        0.008,
        0.05,
        10,
        50,
        1e-3,
        0.002,
        0.2,
        False,
        "mean",
        2,
    ),
    "bidmc-hr": (128, 6, 256, "layer", True, 0.0, 0.01, 0.01, 32, 500, 1e-3, 0.001, 0.1, True, "mean", 2),
    "bidmc-rr": (128, 6, 256, "layer", True, 0.0, 0.01, 0.01, 32, 500, 1e-3, 0.001, 0.1, True, "mean", 2),
    "bidmc-spo2": (128, 6, 256, "layer", True, 0.0, 0.01, 0.01, 32, 500, 1e-3, 0.001, 0.1, True, "mean", 2),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_preset_matches_the_paper_table(name):
    (
        d_model,
        layers,
        d_state,
        norm,
        prenorm,
        dropout,
        lr,
        wd,
        batch,
        epochs,
        ssm_lr,
        dt_min,
        dt_max,
        bidir,
        pool,
        degree,
    ) = TABLE[name]
    c = load_config(name)
    m, a = c.model, c.model.layer_args
    model = (m.d_model, m.n_layers, a["d_state"], m.norm, m.prenorm, m.dropout)
    assert model == (d_model, layers, d_state, norm, prenorm, dropout)
    assert (c.optim.lr, c.optim.weight_decay, c.data.batch_size, c.trainer.max_epochs) == (
        lr,
        wd,
        batch,
        epochs,
    )
    assert (a["lr"], a["dt_min"], a["dt_max"], a.get("bidirectional", False)) == (
        ssm_lr,
        dt_min,
        dt_max,
        bidir,
    )
    assert (m.head if pool == "retrieval" else m.pool) == pool
    assert (m.layer, a["init"], a["liquid_kernel"], a["liquid_degree"]) == (
        "liquid_s4",
        "legs",
        "pb",
        degree,
    )
    assert c.optim.scheduler == ("multistep" if name.startswith("bidmc") else "cosine")


def test_every_preset_is_in_the_table_or_runs_without_files():
    offline = {
        "digits",
        "copying",
        "adding",
        "delay",
        "listops-generated",
        "smnist",
        "psmnist",
        "selective-copying",
        "mqar",
        "irregular-integral",
    }
    uea = {n for n in preset_names() if n == "uea" or n.startswith("uea-")}  # two steps on real files below
    assert set(preset_names()) - offline - uea == set(TABLE)
    assert uea <= set(FIXTURES)


# ---- two training steps of every preset on fixture data in the dataset's real format ----------


def _cifar(root):
    from ..data.test_cifar import write_cifar

    write_cifar(root)
    return root, (3, 10)


def _cifar_gray(root):
    return _cifar(root)[0], (1, 10)


def _pathfinder(resolution):
    def write(root):
        from ..data.test_pathfinder import write_pathfinder

        write_pathfinder(root, resolution=resolution)
        return root, (1, 2)

    return write


def _speech(root):
    from ..data.test_speech_commands import write_speech_commands

    write_speech_commands(root)
    return root, (1, 35)


def _bidmc(root):
    from ..data.test_bidmc import write_bidmc

    write_bidmc(root, length=40)
    return root, (2, 1)


def _text(writer, io):
    def write(root):
        from ..data import test_aan, test_imdb, test_listops

        getattr({"listops": test_listops, "imdb": test_imdb, "aan": test_aan}[writer], f"write_{writer}")(
            root
        )
        return root, io

    return write


def _uea(dataset):
    """A real archive problem (BasicMotions: 6 channels, 4 classes, from the test fixtures) under the
    preset's problem name, in the archive's layout; the generic preset reads the TRAIN file itself."""

    def write(root):  # copies: the dataset's cache is written beside the files, not into the fixtures
        src = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ts", "BasicMotions")
        name = dataset or "BasicMotions"
        os.makedirs(os.path.join(root, name))
        for part in ("TRAIN", "TEST"):
            target = os.path.join(root, name, f"{name}_{part}.ts")
            shutil.copy(os.path.join(src, f"BasicMotions_{part}.ts"), target)
        if dataset is None:  # the generic preset names no problem: it is given the TRAIN file itself
            return os.path.join(root, name, f"{name}_TRAIN.ts"), (6, 4)
        return root, (6, 4)

    return write


FIXTURES = {
    "lra-listops": _text("listops", (1, 10)),
    "lra-text": _text("imdb", (1, 2)),
    "lra-retrieval": _text("aan", (1, 2)),
    "scifar": _cifar,
    "lra-image": _cifar_gray,
    "lra-pathfinder": _pathfinder(32),
    "lra-pathx": _pathfinder(128),
    "speech-commands": _speech,
    "bidmc-hr": _bidmc,
    "bidmc-rr": _bidmc,
    "bidmc-spo2": _bidmc,
    "uea": _uea(None),
    **{
        f"uea-{d.lower()}": _uea(d)
        for d in (
            "EigenWorms",
            "EthanolConcentration",
            "Heartbeat",
            "MotorImagery",
            "SelfRegulationSCP1",
            "SelfRegulationSCP2",
        )
    },
}
TINY = [
    "model.d_model=8",
    "model.n_layers=1",
    "model.layer_args.d_state=4",
    "data.batch_size=2",
    "trainer.max_steps=2",
    "trainer.progress=false",
]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_preset_trains_on_fixture_data(tmp_path, name):
    from liquid_s4.train.data import build_datamodule
    from liquid_s4.train.run import train

    data_dir, (d_input, d_output) = FIXTURES[name](str(tmp_path / "data"))
    cfg = load_config(name, TINY + [f"data.data_dir={data_dir}"])
    info = build_datamodule(cfg.data).info
    assert (info.d_input, info.d_output) == (d_input, d_output)
    if name in ("lra-listops", "lra-text", "lra-retrieval"):
        assert info.vocab_size == (16 if name == "lra-listops" else 257)
    metrics = train(cfg, output_dir=str(tmp_path / "run"), quiet=True)
    assert metrics["global_step"] == 2
    if name.startswith("bidmc"):
        assert metrics["test/rmse"] >= 0 and metrics["test/rmse_orig"] > 0
    else:
        assert 0 <= metrics["test/acc"] <= 1
    if name == "speech-commands":
        assert 0 <= metrics["test_8khz/acc"] <= 1  # the zero-shot 8 kHz test set, run at rate 2


GENERATED = {
    "copying": [
        "data.options.n_train=8",
        "data.options.n_val=2",
        "data.options.n_test=2",
        "data.options.delay=20",
    ],
    "adding": [
        "data.options.n_train=8",
        "data.options.n_val=2",
        "data.options.n_test=2",
        "data.options.length=30",
    ],
    "delay": [
        "data.options.n_train=8",
        "data.options.n_val=2",
        "data.options.n_test=2",
        "data.options.length=30",
        "data.options.delay=5",
    ],
    "listops-generated": [
        "data.options.n_train=8",
        "data.options.n_val=2",
        "data.options.n_test=2",
        "data.options.max_length=60",
        "data.options.min_length=10",
    ],
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_preset_trains_without_files(tmp_path, name):
    from liquid_s4.train.run import train

    metrics = train(load_config(name, TINY + GENERATED[name]), output_dir=str(tmp_path / "run"), quiet=True)
    assert metrics["global_step"] == 2
    assert (0 <= metrics["test/acc"] <= 1) if name != "adding" else metrics["test/mse"] >= 0
