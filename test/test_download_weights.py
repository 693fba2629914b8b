"""download-weights per network: the adapter's address, the checks, the cache it fills.

There is no network here, so the published addresses are only checked for their form; the
transfer itself runs on file:// addresses.
"""
import copy
import hashlib
import urllib.parse

import pytest
import torch

from hybridnets_ros.cli import main
from hybridnets_ros.core.registry import ADAPTERS
from hybridnets_ros.core.weights import WeightsError

YOLOP = ADAPTERS["yolop"]


@pytest.fixture(scope="module")
def yolop_checkpoint(tmp_path_factory):
    """YOLOP's random weights in the released layout ({'state_dict': ...})."""
    path = tmp_path_factory.mktemp("yolop") / "End-to-end.pth"
    torch.save({"state_dict": YOLOP.load_module(None).state_dict()}, path)
    return path


def test_adapters_with_a_public_checkpoint_name_its_file():
    fetchable = {name for name, a in ADAPTERS.items() if a.downloadable}
    assert fetchable == {"hybridnets", "yolop", "hydra"}
    for name in fetchable:
        url = urllib.parse.urlparse(ADAPTERS[name].weights_url)
        assert url.scheme == "https" and url.netloc == "github.com", name
        assert url.path.endswith("/" + ADAPTERS[name].weights_name), name


def test_download_fills_the_models_cache_entry(tmp_path, monkeypatch, isolated_cache,
                                               yolop_checkpoint, capsys):
    assert main(["download-weights", "--model", "yolop", "--url", yolop_checkpoint.as_uri()]) == 0
    cached = YOLOP.cached_weights()
    assert cached.parent == isolated_cache and cached.name == "End-to-end.pth"
    assert cached.read_bytes() == yolop_checkpoint.read_bytes()
    assert main(["download-weights", "--model", "yolop"]) == 0  # present: nothing fetched
    assert "already exists" in capsys.readouterr().out


def test_a_model_without_an_address_is_named(isolated_cache, capsys):
    assert not ADAPTERS["hyctas"].downloadable
    assert main(["download-weights", "--model", "hyctas"]) == 2
    err = capsys.readouterr().err
    assert "hyctas has no public checkpoint address" in err and "hyctas_s.pth" in err
    assert [p.name for p in isolated_cache.iterdir()] == ["random"]  # nothing downloaded


def test_a_download_is_checked_against_the_network_and_the_digest(tmp_path, yolop_checkpoint):
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, foreign)
    dest = tmp_path / "cache" / "End-to-end.pth"
    with pytest.raises(WeightsError, match="not a YOLOP checkpoint"):
        YOLOP.download_weights(dest, url=foreign.as_uri(), progress=False)
    assert list(dest.parent.iterdir()) == []  # nothing partial left behind
    with pytest.raises(WeightsError, match="cannot download"):
        YOLOP.download_weights(dest, url=(tmp_path / "absent").as_uri(), progress=False)

    published = copy.copy(YOLOP)  # the same network published at a file:// address
    published.weights_url = yolop_checkpoint.as_uri()
    published.weights_sha256 = "0" * 64
    with pytest.raises(WeightsError, match="SHA-256"):
        published.download_weights(dest, progress=False)
    assert list(dest.parent.iterdir()) == []
    published.weights_sha256 = hashlib.sha256(yolop_checkpoint.read_bytes()).hexdigest()
    assert published.download_weights(dest, progress=False) == dest
