"""The configurations and the run parameters: every setting a user may change reaches a run."""

from dataclasses import fields

import pytest

from components.config import (RunParameters, SanityConfig, TrainConfig, config_from_json, run_parameters_of,
                               user_settings)
from components.errors import UserError


@pytest.mark.parametrize("config", [TrainConfig, SanityConfig])
def test_each_setting_is_one_run_parameter_and_every_other_field_says_why_it_is_fixed(config):
    assert sorted(run_parameters_of(config).values()) == sorted(user_settings(config))
    for item in fields(config):
        assert ("help" in item.metadata) != ("fixed" in item.metadata), \
            f"{config.__name__}.{item.name}: give it help (a run parameter and a flag) or a reason it is fixed"
    defaults = RunParameters()
    for parameter, name in run_parameters_of(config).items():
        assert getattr(defaults, parameter) == getattr(config(), name)


def test_a_configuration_from_json_takes_the_field_types_and_names_what_is_wrong():
    config = config_from_json(TrainConfig, '{"epochs": 7.0, "batch": 16, "model": "yolo11n"}')
    assert (config.epochs, config.batch, config.model) == (7, 16.0, "yolo11n")
    assert isinstance(config.epochs, int) and isinstance(config.batch, float)
    assert config.patience == TrainConfig().patience
    with pytest.raises(UserError, match="SanityConfig has no field epoch"):
        config_from_json(SanityConfig, '{"epoch": 3}')
    with pytest.raises(UserError, match="double quote or a backslash"):
        config_from_json(TrainConfig, '{"weights": "s3://b/"w.pt"}')
