import os

import pytest

# The cores the suite may use, before a pytest-xdist worker confines itself to its share (below).
ALL_CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def pytest_configure(config):
    """Under pytest-xdist (`-n N`, see pyproject.toml), each worker runs on its own share of the cores: cnnlab
    trains with a thread per core it may use, so N workers on all cores would each run all-core threads and
    slow one another far more than N times (the reason `cnnlab search --workers` pins its workers too)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1 and len(ALL_CORES) >= count:
        os.sched_setaffinity(0, set(ALL_CORES[int(worker.removeprefix("gw")) % count::count]))


@pytest.fixture(autouse=True)
def cores_for_the_test(request):
    """A test marked `all_cores` (several processes, or a figure measured on the whole machine) runs on every
    core for its duration, sharing them with the other workers' tests."""
    if not (ALL_CORES and request.node.get_closest_marker("all_cores")):
        yield
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(ALL_CORES))
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own array cache and data folder: no test sees another's files."""
    root = tmp_path_factory.mktemp("cnnlab-home")
    monkeypatch.setenv("CNNLAB_CACHE", str(root / "cache"))
    monkeypatch.setenv("CNNLAB_DATA", str(root / "datasets"))
    return root
