"""Each kind of report.html opened in a real browser (Debian's chromium, headless): not blank, no console
error, no broken image, no request leaving the file. Skipped only where chromium is absent outside CI."""
import json
import os
import re
import shutil
import subprocess

import pytest

from cnnlab.report.html import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="chromium is not installed (CI installs it: .ci/run)")


def check_self_contained(page: str) -> None:
    """No address outside the file: every src and href is a data: URI or a relative path; no url() either."""
    for attr, value in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', page):
        assert not re.match(r"^(https?:|//|file:|ftp:)", value, re.I), f"{attr}={value[:60]} leaves the file"
        if attr == "src":
            assert value.startswith("data:image/png;base64,"), f"img src {value[:40]} is not inline"
    assert "url(" not in page and "@import" not in page and "<script" not in page.lower()


def render(page_path, tmp_path) -> tuple[str, str, bytes]:
    """The DOM after load, chromium's log (console messages, failed loads) and a screenshot."""
    shot = tmp_path / f"{page_path.parent.name}.png"
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
              "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run([*common, "--dump-dom", page_path.as_uri()], capture_output=True, text=True, timeout=120)
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,1600", page_path.as_uri()],
                   capture_output=True, text=True, timeout=120)
    return dom.stdout, dom.stderr, shot.read_bytes()


def not_blank(png_bytes: bytes) -> bool:
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(png_bytes)).convert("L")
    lo, hi = image.getextrema()
    return hi - lo > 100 and sum(1 for n in image.histogram() if n) > 10


def assert_renders(folder, tmp_path, expect: str) -> None:
    page_path = write_report(folder)
    page = page_path.read_text()
    check_self_contained(page)
    dom, log, shot = render(page_path, tmp_path)
    assert expect in dom
    assert not re.search(r"CONSOLE.*(error|Uncaught)|Failed to load resource|net::ERR_", log, re.I), log[-2000:]
    images = re.findall(r"<img[^>]*>", dom)
    assert images and all("data:image/png;base64," in i for i in images)
    assert not_blank(shot), "the screenshot is blank"
    # a broken image: every inline PNG must decode
    from base64 import b64decode
    from io import BytesIO

    from PIL import Image

    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        Image.open(BytesIO(b64decode(data))).verify()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from cnnlab.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "run"
    train(TrainConfig(model="cnn", model_kwargs={"arch": {"stages": [{"blocks": 1, "width": 8, "kernel": 3}]}},
                      data="digits", image_size=8, epochs=2, out=str(out), quiet=True, monitor_every=5))
    return out


def test_run_report_renders(trained_run, tmp_path):
    assert_renders(trained_run, tmp_path, "Learning curves")
    page = (trained_run / "report.html").read_text()
    for part in ("Per-class accuracy", "confidently wrong", "receptive field", "Gradient health", "Config"):
        assert part in page


def test_study_report_renders(tmp_path):
    from cnnlab.studies import plots
    from tests.studies.test_harness import fake_results  # the made-up results of the harness tests

    results = fake_results()
    results["plots"] = [{"file": plots.save(plots.bars(results, "test_accuracy", "accuracy"), tmp_path, "acc.png"),
                         "caption": "accuracy"}]
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert_renders(tmp_path, tmp_path, "Verdict")


def test_search_report_renders(tmp_path):
    from cnnlab.search.run import run_search

    run_search("mixed", "digits", 2, "s", tmp_path, strategy="random", epochs=1, image_size=8, max_params=20000)
    assert_renders(tmp_path, tmp_path, "Leaderboard")
    assert "Best architecture" in (tmp_path / "report.html").read_text()



def test_tour_index_renders_and_links_each_study_report(tmp_path):
    """The index: a row per study with its verdict, linking the study's own report (a relative link)."""
    from cnnlab.studies import plots
    from tests.studies.test_harness import fake_results

    study = tmp_path / "filters"
    study.mkdir()
    results = fake_results()
    results["plots"] = [{"file": plots.save(plots.bars(results, "test_accuracy", "accuracy"), study, "acc.png"),
                         "caption": "accuracy"}]
    (study / "results.json").write_text(json.dumps(results))
    write_report(study)
    (tmp_path / "tour.json").write_text(json.dumps({"budget": "small", "seeds": 3, "seconds": 60.0, "studies": [
        {"name": "filters", "claim": results["claim"], "verdict": results["verdict"], "seconds": 60.0}]}))
    page = write_report(tmp_path).read_text()
    check_self_contained(page)
    assert 'href="filters/report.html"' in page and 'class="verdict supported"' in page
    dom, log, shot = render(tmp_path / "report.html", tmp_path)
    assert "The CNN playbook, measured" in dom and not_blank(shot)
    assert not re.search(r"CONSOLE.*(error|Uncaught)|Failed to load resource|net::ERR_", log, re.I), log[-2000:]
