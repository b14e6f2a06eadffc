"""The device a training runs on, from the run's device and GPU count."""

import pytest

from components.errors import UserError
from components.runtime.devices import training_device


def test_gpu_count_becomes_a_ddp_device_list():
    assert training_device("cuda", "1") == "cuda"
    assert training_device("cuda", "4") == "0,1,2,3"
    assert training_device("cpu", "4") == "cpu"
    for bad in ("0", "two", "1.5", ""):
        with pytest.raises(UserError, match="whole number of GPUs"):
            training_device("cuda", bad)
