import torch

from liquid_s4 import S4, param_groups


def test_param_groups_follow_optimizer_hints():
    layer = S4(4, 8, lr=5e-4)
    groups = param_groups(layer, lr=1e-2, weight_decay=0.1)
    by_param = {id(p): g for g in groups for p in g["params"]}
    for name in ("log_dt", "log_A_real_gap", "A_imag", "P", "B"):
        g = by_param[id(getattr(layer.ssm, name))]
        assert g["lr"] == 5e-4 and g["weight_decay"] == 0.0
    assert by_param[id(layer.ssm.C)]["lr"] == 1e-2 and by_param[id(layer.ssm.C)]["weight_decay"] == 0.1
    assert by_param[id(layer.output.projection[0].bias)]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(layer.parameters()))
    torch.optim.AdamW(groups)  # accepted by torch.optim
