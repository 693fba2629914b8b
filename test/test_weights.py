"""Checkpoint errors are explained, downloads are verified and atomic."""
import pytest
import torch

from hybridnets_ros.core.models.hybridnets import HybridNets
from hybridnets_ros.core.models.hybridnets.weights import CHECKPOINT_LABEL, load_module
from hybridnets_ros.core.registry import adapter
from hybridnets_ros.core.weights import WeightsError, load_into, read_state_dict


@pytest.fixture(scope="module")
def random_state(random_weights):
    return read_state_dict(random_weights)


def test_missing_empty_truncated_and_foreign_files(tmp_path, random_weights):
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="not a file"):
        read_state_dict(tmp_path)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty \(0 bytes\)"):
        read_state_dict(tmp_path / "empty.pth")
    data = random_weights.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cannot read .*cut.pth as a PyTorch checkpoint"):
        read_state_dict(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text('{"not": "weights"}')
    with pytest.raises(WeightsError, match="cannot read"):
        read_state_dict(tmp_path / "text.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(WeightsError, match="not a state_dict of tensors"):
        read_state_dict(tmp_path / "meta.pth")


def test_key_mismatches_are_listed(random_state):
    state = dict(random_state)
    del state["encoder._conv_stem.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["classifier.header.pointwise_conv.conv.bias"] = torch.zeros(90)  # a 10-class head
    with pytest.raises(WeightsError) as info:
        load_into(HybridNets(), state, "other.pth", CHECKPOINT_LABEL)
    message = str(info.value)
    assert "other.pth is not a HybridNets-D3 checkpoint" in message
    assert "1 missing keys: encoder._conv_stem.weight" in message
    assert "1 unexpected keys: extra.weight" in message
    assert "classifier.header.pointwise_conv.conv.bias (90,) (expected (9,))" in message


def test_many_missing_keys_are_summarised():
    with pytest.raises(WeightsError, match=r"1502 missing keys: .*\(1497 more\)"):
        load_into(HybridNets(), {}, "empty dict", CHECKPOINT_LABEL)


def test_wrapped_state_dict_loads(tmp_path, random_state):
    torch.save({"model": random_state, "epoch": 10}, tmp_path / "ckpt.pth")
    model = load_module(tmp_path / "ckpt.pth")
    assert torch.equal(model.state_dict()["segmentation_head.0.bias"],
                       random_state["segmentation_head.0.bias"])


@pytest.mark.slow  # builds the random network twice
def test_random_weights_are_deterministic(hybridnets_module):
    again = load_module(random_weights=True)  # the session's model was built the same way
    assert all(torch.equal(hybridnets_module.state_dict()[k], v)
               for k, v in again.state_dict().items())
    with pytest.raises(WeightsError, match="no weights"):
        load_module()


def test_random_weights_are_kept_in_the_cache_and_rebuilt_when_damaged(tmp_path, monkeypatch, caplog):
    from hybridnets_ros.pipeline.config import NodeConfig
    from hybridnets_ros.pipeline.factory import load_module as load_configured

    monkeypatch.setenv("HYBRIDNETS_CACHE", str(tmp_path))
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "yolop-0123456789abcdef.pth").write_bytes(b"an earlier code's")
    config = NodeConfig(model="yolop", allow_random_weights=True)
    first, path = load_configured(config)
    assert path is None
    [kept] = (tmp_path / "random").glob("yolop-*.pth")
    again = load_configured(config)[0]
    for (key, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), key
    kept.write_bytes(b"not a checkpoint")
    rebuilt = load_configured(config)[0]
    assert "building them again" in caplog.text
    assert torch.equal(next(iter(rebuilt.state_dict().values())), next(iter(first.state_dict().values())))
    assert not list((tmp_path / "random").glob("*.part"))
