import pytest

from reid_kd.config import MOVED_DATA_KEYS
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


def test_the_options_of_each_dataset_used_are_filled_with_their_entry_defaults():
    cfg = load_config(None, ["data.dataset=vehicleid", "data.train_datasets=[cuhk03, market1501]",
                             "data.vehicleid.draws=3"])
    data = cfg["data"]
    assert data["vehicleid"] == {"test_size": 800, "draws": 3, "draw_seed": 0}
    assert data["cuhk03"] == {"variant": "labeled"}
    assert data["synth"] == defaults()["data"]["synth"]  # the synthetic datasets' block is in every config
    blocks = {key for key, value in data.items() if isinstance(value, dict)}
    assert blocks == {"synth", "vehicleid", "cuhk03"}  # market1501 has no options; unused datasets no block
    assert {k for k, v in load_config(None)["data"].items() if isinstance(v, dict)} == {"synth"}


def test_an_option_of_a_dataset_the_config_does_not_use_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"^config key 'data\.vehicleid\.test_size' is an option of dataset "
                                          r"vehicleid, which this config does not use; remove it, or set "
                                          r"data\.dataset=vehicleid$"):
        load_config(None, ["data.dataset=veri776", "data.vehicleid.test_size=1600"])
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.msmt17\.versoin' \(did you mean 'version'"):
        load_config(None, ["data.train_datasets=[msmt17]", "data.msmt17.versoin=v2"])


@pytest.mark.parametrize("old,new", sorted(MOVED_DATA_KEYS.items()))
def test_an_old_flat_data_key_is_refused_naming_its_new_key(old, new):
    with pytest.raises(ConfigError, match=rf"^config key 'data\.{old}' is now 'data\.{new}'; rename it$"):
        load_config(None, [f"data.{old}=1"])
    dataset, option = new.split(".")  # and the new key is a real option of that dataset
    assert option in load_config(None, [f"data.dataset={dataset}"])["data"][dataset]


def test_a_bad_choice_of_a_dataset_option_names_the_choices():
    with pytest.raises(ConfigError, match=r"'data\.cuhk03\.variant' must be one of \['labeled', 'detected'\], "
                                          r"got 'both'"):
        load_config(None, ["data.dataset=cuhk03", "data.cuhk03.variant=both"])
    with pytest.raises(ConfigError, match=r"'data\.vehicleid\.draws' must be at least 1, got 0"):
        load_config(None, ["data.dataset=vehicleid", "data.vehicleid.draws=0"])
