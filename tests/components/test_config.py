"""The configurations and the run parameters: every setting a user may change reaches a run."""

from dataclasses import fields

import pytest

from components.config import (RunParameters, SanityConfig, TrainConfig, config_from_run, run_parameters_of,
                               user_settings)


@pytest.mark.parametrize("config", [TrainConfig, SanityConfig])
def test_each_setting_is_one_run_parameter_and_every_other_field_says_why_it_is_fixed(config):
    assert sorted(run_parameters_of(config).values()) == sorted(user_settings(config))
    for item in fields(config):
        assert ("help" in item.metadata) != ("fixed" in item.metadata), \
            f"{config.__name__}.{item.name}: give it help (a run parameter and a flag) or a reason it is fixed"
    defaults = RunParameters()
    for parameter, name in run_parameters_of(config).items():
        assert getattr(defaults, parameter) == getattr(config(), name)


def test_a_configuration_from_a_steps_arguments_takes_its_settings_with_the_field_types():
    arguments = {"epochs": 7.0, "batch": 16, "model": "yolo11n", "base_weights_uri": 's3://b/"w".pt',
                 "patience": 3, "imgsz": 96, "training_device": "cpu", "sanity_epochs": 1, "manifest": "/m"}
    config = config_from_run(TrainConfig, arguments)
    assert (config.epochs, config.batch, config.model, config.weights) == (7, 16.0, "yolo11n", 's3://b/"w".pt')
    assert isinstance(config.epochs, int) and isinstance(config.batch, float)
    assert (config.patience, config.device, config.optimizer) == (3, "cpu", TrainConfig().optimizer)
