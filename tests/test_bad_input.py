"""Bad input exits non-zero with a message that names the field."""
import subprocess
import sys

import pytest

from automix.config import ConfigError, load_config
from automix.train import main


@pytest.mark.parametrize("overrides, needle", [
    (["mix.alpah=2"], "mix.alpah"),
    (["mix.alpha=0"], "mix.alpha"),
    (["mix.alpha=-1"], "mix.alpha"),
    (["train.epochs=three"], "train.epochs"),
    (["method=automixx"], "automix | mixup | cutmix | vanilla"),
    (["model.backbone=resnet19"], "model.backbone"),
    (["data.name=cifar10", "data.root=/nonexistent/cifar"], "data.root='/nonexistent/cifar'"),
])
def test_cli_rejects(tmp_path, capsys, overrides, needle):
    args = []
    for o in overrides:
        args += ["--set", o]
    rc = main([*args, "--output-dir", str(tmp_path / "out")])
    assert rc == 2
    assert needle in capsys.readouterr().err


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 0.1\n  mixblok_lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.mixblok_lr.*c\.yaml"):
        load_config(f)


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config({"optim": {"lr": "fast"}})


def test_process_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "automix.train", "--set", "mix.alpha=0", "--output-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "mix.alpha" in proc.stderr
