import pytest

from reid_kd.engine.configs import load_config
from reid_kd.errors import ConfigError
from reid_kd.schema import defaults


def write(path, text):
    path.write_text(text)
    return path


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  lr: 0.01\n  epochs: 3\ndata:\n  height: 32\n")
    cfg_file = write(tmp_path / "exp.yaml", "_base_: base.yaml\ntrain:\n  epochs: 5\n")
    cfg = load_config(cfg_file, ["data.width=48", "train.triplet_soft_margin=true"])
    assert cfg["train"]["lr"] == 0.01 and cfg["train"]["epochs"] == 5
    assert cfg["data"]["height"] == 32 and cfg["data"]["width"] == 48
    assert cfg["train"]["triplet_soft_margin"] is True
    expected = defaults()  # every key that neither file nor override sets keeps its default
    expected["train"].update(lr=0.01, epochs=5, triplet_soft_margin=True)
    expected["data"].update(height=32, width=48)
    assert cfg == expected


def test_unknown_key_is_named_with_its_dotted_path(tmp_path):
    cfg_file = write(tmp_path / "bad.yaml", "train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.lrr.*did you mean 'lr'"):
        load_config(cfg_file)
    with pytest.raises(ConfigError, match=r"teacher\.train\.epoch\b"):
        load_config(None, ["teacher.train.epoch=3"])


@pytest.mark.parametrize("override,key", [
    ("train.lr=fast", "train.lr"), ("data.batch_p=4.5", "data.batch_p"),
    ("experiment.amp=yes", "experiment.amp"), ("train.scheduler=linear", "train.scheduler"),
    ("train.milestones=[1, two]", "train.milestones"), ("data=3", "data"),
])
def test_wrong_types_are_rejected_by_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_int_is_accepted_where_float_is_expected():
    assert load_config(None, ["train.lr=1"])["train"]["lr"] == 1.0
