import pytest

import liverfuse
from liverfuse.params import CLASSIFIERS, PROFILES, parse_list


def test_defaults(params):
    P = params()
    assert P.data_dir is None and P.data_label == "phantom"
    assert P.profile is PROFILES["quick"]
    assert P.protocol == "patient" and P.seed == 0
    assert P.output_dir.is_dir() and P.cache_dir.is_dir()


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"protocol": "bogus"}, ["protocol", "patient", "paper"]),
        ({"profile": "fast"}, ["profile", "quick", "paper"]),
        ({"classifier": "bogus"}, ["classifier", *CLASSIFIERS]),
        ({"preprocessing": "clahe"}, ["preprocessing", "paper", "none"]),
        ({"backbones": "resnet50,alexnet"}, ["alexnet", "resnet50", "efficientnet_lite0"]),
        ({"weights": "/no/such/file.h5"}, ["weights", "auto", "imagenet", "random"]),
        ({"seed": "abc"}, ["seed"]),
        ({"seed": 1.7}, ["seed", "whole number"]),
        ({"data_dir": "/no/such/folder"}, ["data_dir", "<class>/<patient>/<image>"]),
    ],
)
def test_bad_values_name_parameter_and_allowed(params, kw, words):
    with pytest.raises(ValueError) as e:
        params(**kw)
    for w in words:
        assert w in str(e.value)


def test_whole_number_seeds_from_the_command_line(params):
    assert params(seed="3").seed == 3 and params(seed=2.0).seed == 2


def test_unknown_notebook():
    with pytest.raises(ValueError, match="01_data"):
        liverfuse.setup("99_nope")


def test_list_parameters_accept_comma_strings(params):
    P = params(backbones="resnet50, vgg16,resnet50", classifiers=["knn", "stacking"])
    assert P.backbones == ("resnet50", "vgg16")
    assert P.classifiers == ("knn", "stacking")
    assert parse_list("x", "") == ()


def test_weights_path(params, tmp_path):
    f = tmp_path / "w.weights.h5"
    f.write_bytes(b"x")
    assert params(weights=str(f)).weights == str(f.resolve())


def test_tune_allocator_applies_once_and_can_be_turned_off(monkeypatch):
    import platform

    from liverfuse import params

    monkeypatch.setattr(params, "_tuned", {})
    monkeypatch.setenv("LIVERFUSE_MALLOC", "default")
    assert params.tune_allocator() == {} and params._tuned == {}
    monkeypatch.delenv("LIVERFUSE_MALLOC")
    applied = params.tune_allocator()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied == {name: True for name in params._MALLOPT}
    assert params.tune_allocator() == applied  # once per process
