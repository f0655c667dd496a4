"""Two `cnnlab search` workers on one PostgreSQL study; one is killed mid-trial; the study still completes,
with the killed trial marked failed and trained again. Needs a server: .ci/run starts one and sets
CNNLAB_TEST_POSTGRES (see .ci/postgres.sh)."""
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest

URL = os.environ.get("CNNLAB_TEST_POSTGRES")
pytestmark = [pytest.mark.skipif(not URL, reason="no PostgreSQL server (CNNLAB_TEST_POSTGRES unset; .ci/run sets it)"),
              pytest.mark.all_cores]  # two workers, a core each (as on two machines)


def test_killed_worker_loses_only_its_running_trial_which_is_retried(tmp_path):
    study = f"t{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CNNLAB_SEARCH_HEARTBEAT": "1", "OMP_NUM_THREADS": "1"}

    cores = sorted(os.sched_getaffinity(0))

    def worker(name, core):
        return subprocess.Popen([sys.executable, "-m", "cnnlab", "search", "--space", "resnet-like", "--trials", "6",
                                 "--study", study, "--storage", URL, "--out", str(tmp_path / name), "--data", "digits",
                                 "--epochs", "1", "--image-size", "16", "--strategy", "random"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=lambda: os.sched_setaffinity(0, {cores[core % len(cores)]}))

    doomed, survivor = worker("a", 0), worker("b", 1)
    deadline = time.time() + 120
    victim = None
    while time.time() < deadline and victim is None:  # kill `doomed` while it trains a trial of its own
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name=study, storage=URL).trials
        except KeyError:  # the workers have not created the study yet
            continue
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                   and str(tmp_path / "a") in t.user_attrs.get("run_dir", "")]
        if running:
            victim = running[0].number
            os.killpg(doomed.pid, signal.SIGKILL)
    assert victim is not None, "worker a never started a trial"
    assert survivor.wait(timeout=300) == 0, survivor.stderr.read().decode()[-2000:]
    trials = optuna.load_study(study_name=study, storage=URL).trials
    states = {t.number: t.state for t in trials}
    assert states[victim] == optuna.trial.TrialState.FAIL  # its heartbeat stopped: failed, not left running
    assert sum(s == optuna.trial.TrialState.COMPLETE for s in states.values()) >= 6
    assert not any(s == optuna.trial.TrialState.RUNNING for s in states.values())
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert retried and retried[0].state == optuna.trial.TrialState.COMPLETE  # trained again, same choices
    assert retried[0].params == next(t for t in trials if t.number == victim).params
