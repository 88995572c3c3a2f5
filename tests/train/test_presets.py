"""Every paper preset carries the hyperparameters of the paper's public configs (the table below is
the one in the presets issue), and trains for two steps on fixture data written in its real format."""

import pytest

from liquid_s4.train.config import load_config, preset_names

# preset: d_model, layers, d_state, norm, prenorm, dropout, lr, wd, batch, epochs, ssm lr, dt_min, dt_max, bidir, pool/head, degree
TABLE = {
    "lra-listops": (128, 9, 8, "batch", True, 0.01, 0.002, 0.03, 12, 40, 9e-4, 0.002, 0.2, False, "mean", 3),
    "lra-text": (128, 4, 8, "batch", True, 0.1, 0.003, 0.01, 8, 50, 9e-4, 0.002, 0.2, False, "mean", 2),
    "lra-retrieval": (256, 6, 64, "batch", True, 0.2, 0.005, 0.05, 16, 20, 1e-3, 0.001, 0.1, False, "retrieval", 2),
    "lra-image": (512, 6, 512, "layer", False, 0.1, 0.01, 0.03, 50, 200, 1e-3, 0.002, 0.2, True, "mean", 2),
    "lra-pathfinder": (256, 6, 64, "batch", True, 0.0, 0.004, 0.03, 4, 200, 1e-3, 0.001, 0.1, False, "last", 2),
    "lra-pathx": (320, 6, 64, "batch", True, 0.0, 0.001, 0.05, 8, 60, 5e-4, 1e-4, 0.1, False, "mean", 2),
    "scifar": (512, 6, 64, "layer", False, 0.1, 0.01, 0.05, 50, 200, 1e-3, 0.001, 0.1, True, "mean", 3),
    "speech-commands": (128, 6, 8, "batch", True, 0.0, 0.008, 0.05, 10, 50, 1e-3, 0.002, 0.2, False, "mean", 2),
    "bidmc-hr": (128, 6, 256, "layer", True, 0.0, 0.01, 0.01, 32, 500, 1e-3, 0.001, 0.1, True, "mean", 2),
    "bidmc-rr": (128, 6, 256, "layer", True, 0.0, 0.01, 0.01, 32, 500, 1e-3, 0.001, 0.1, True, "mean", 2),
    "bidmc-spo2": (128, 6, 256, "layer", True, 0.0, 0.01, 0.01, 32, 500, 1e-3, 0.001, 0.1, True, "mean", 2),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_preset_matches_the_paper_table(name):
    d_model, layers, d_state, norm, prenorm, dropout, lr, wd, batch, epochs, ssm_lr, dt_min, dt_max, bidir, pool, degree = TABLE[name]
    c = load_config(name)
    m, a = c.model, c.model["layer_args"]
    model = (m["d_model"], m["n_layers"], a["d_state"], m["norm"], m["prenorm"], m["dropout"])
    assert model == (d_model, layers, d_state, norm, prenorm, dropout)
    assert (c.optim.lr, c.optim.weight_decay, c.data.batch_size, c.trainer.max_epochs) == (lr, wd, batch, epochs)
    assert (a["lr"], a["dt_min"], a["dt_max"], a.get("bidirectional", False)) == (ssm_lr, dt_min, dt_max, bidir)
    assert (m.get("head") if pool == "retrieval" else m["pool"]) == pool
    assert (m["layer"], a["init"], a["liquid_kernel"], a["liquid_degree"]) == ("liquid_s4", "legs", "pb", degree)
    assert c.optim.scheduler == ("multistep" if name.startswith("bidmc") else "cosine")


def test_every_preset_is_in_the_table_or_runs_without_files():
    offline = {"digits", "copying", "adding", "delay", "listops-generated", "smnist", "psmnist"}
    assert set(preset_names()) - offline == set(TABLE)
