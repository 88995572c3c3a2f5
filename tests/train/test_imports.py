"""Lightning is imported in one place (liquid_s4.train.pl), and only by the training modules:
the layers, models, datasets, configuration and `data check` work without it."""

import os
import re
import subprocess
import sys

import liquid_s4


def test_only_train_pl_imports_lightning():
    root = os.path.dirname(liquid_s4.__file__)
    importers = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    if re.search(r"^\s*(import|from)\s+(lightning|pytorch_lightning)\b", f.read(), re.M):
                        importers.append(os.path.relpath(path, root))
    assert importers == [os.path.join("train", "pl.py")]


def test_importing_the_library_does_not_import_lightning():
    code = (
        "import sys, liquid_s4, liquid_s4.data.check, liquid_s4.data.registry, liquid_s4.train.config, "
        "liquid_s4.train.checks, liquid_s4.cli\nfrom liquid_s4.cli import main\nassert main(['data', "
        "'check', 'digits']) == 0\nassert main(['presets']) == 0\nassert 'lightning' not in sys.modules, "
        "'lightning was imported'\nimport liquid_s4.train.module\nassert 'lightning' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok: every split was read" in proc.stdout
