"""How a failed torchrun group is reported: a rank killed by a signal is a lost process (the job system
resumes the run), a rank that raised or exited is the run's failure, with its own reason."""

from __future__ import annotations

from oikyo.train import ProcessLost, TrainingError
from oikyo.train.launch import _failure

ROOT_CAUSE = """[W] torch.distributed.elastic.multiprocessing.api: failed
Root Cause (first observed failure):
[0]:
  time      : 2026-12-06_21:30:00
  host      : here
  rank      : 1 (local_rank: 1)
  exitcode  : {code} (pid: 4242)
"""


def test_a_rank_killed_by_a_signal_is_a_lost_process(tmp_path):
    (tmp_path / "torchrun.log").write_text(ROOT_CAUSE.format(code=-9))
    error = _failure(tmp_path, 1)
    assert isinstance(error, ProcessLost)
    assert "rank 1 exited with code -9" in str(error)


def test_a_rank_that_exited_or_raised_fails_the_run_with_its_reason(tmp_path):
    (tmp_path / "torchrun.log").write_text(ROOT_CAUSE.format(code=7))
    error = _failure(tmp_path, 1)
    assert type(error) is TrainingError and "rank 1 exited with code 7" in str(error)
    (tmp_path / "error-1.txt").write_text("rank 1: ValueError: bad row 12")
    error = _failure(tmp_path, 1)
    assert type(error) is TrainingError and str(error) == "a training process failed: rank 1: ValueError: bad row 12"
