"""`cnnlab tour`: every study at the small budget, then one index page linking each study's report, with the
verdicts in one table (`OUT/report.html`, from `OUT/tour.json`)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from . import NAMES, get
from .harness import check_seeds, run_study


def run_tour(out: Path, budget: str = "small", seeds: int | None = None, quiet: bool = False,
             only: list[str] | None = None) -> Path:
    from ..report.html import refuse_other_kind, write_report

    out = Path(out)
    check_seeds(seeds, budget)  # before any folder is made
    refuse_other_kind(out, "tour")
    out.mkdir(parents=True, exist_ok=True)
    started, entries = time.perf_counter(), []
    for name in only or NAMES:
        t0 = time.perf_counter()
        results = run_study(get(name), out / name, budget, seeds, quiet=quiet)
        entries.append({"name": name, "claim": results["claim"], "verdict": results["verdict"],
                        "evidence": results["evidence_text"], "seconds": round(time.perf_counter() - t0, 1)})
        seeds_used = len(results["seeds"])
        (out / "tour.json").write_text(json.dumps({"budget": budget, "seeds": seeds_used, "studies": entries,
                                                   "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    return write_report(out)
