"""Refusals: a failure no retry can fix ends the retries of that pipeline run; any other failure leaves them be."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from components.errors import UserError
from components.storage import open_store
from components.training.deadrun import DeadRunError
from components.training.refusals import refusals_recorded


def _fail_with(store, error: Exception, kfp_run_id: str = "kfp-run-7") -> None:
    with pytest.raises(type(error)), refusals_recorded(store, "night-1", kfp_run_id):
        raise error


def test_a_failure_no_retry_can_fix_refuses_the_retries_of_that_pipeline_run_naming_it(tmp_path: Path):
    store = open_store(str(tmp_path))
    _fail_with(store, UserError("device 'cuda' asks for CUDA, but CUDA is not available"))
    entered = []
    with pytest.raises(UserError, match="not trained again: .*CUDA is not available"):
        with refusals_recorded(store, "night-1", "kfp-run-7"):
            entered.append(True)
    assert not entered  # refused before the block runs: no training again
    with refusals_recorded(store, "night-1", "kfp-run-8"):  # the next pipeline run tries again
        entered.append(True)
    assert entered == [True]


def test_a_dead_run_is_refused_too_and_a_failure_a_retry_may_fix_is_not(tmp_path: Path):
    store = open_store(str(tmp_path))
    _fail_with(store, DeadRunError("This is a dead run: every loss is exactly 0", steps=3), "dead")
    with pytest.raises(UserError, match="not trained again: .*: This is a dead run"):
        with refusals_recorded(store, "night-1", "dead"):
            pass
    _fail_with(store, ConnectionResetError("the node went away"), "lost-node")  # what KFP's retries are for
    with refusals_recorded(store, "night-1", "lost-node"):
        pass


def test_a_refusal_the_store_cannot_record_keeps_the_failure_that_explains_the_step(
        s3_bucket: str, s3_faults, caplog: pytest.LogCaptureFixture):
    store = open_store(s3_bucket)
    s3_faults.inject_on("PUT", "/refusals/", "403")
    with caplog.at_level(logging.ERROR, logger="pogona"):
        with pytest.raises(UserError, match="a bad parameter"):
            with refusals_recorded(store, "night-1", "kfp-run-7"):
                raise UserError("a bad parameter")
    assert "could not record that a retry cannot fix this" in caplog.text
    assert not store.exists("runs/night-1/refusals/kfp-run-7.json")
