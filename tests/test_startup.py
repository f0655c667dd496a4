"""The command line answers at once where it has nothing to compute: importing it, its help and `cnnlab
models` import none of the heavy packages (torch alone takes over a second to import).
`python benchmarks/startup.py` prints the times."""
import json
import subprocess
import sys

from cnnlab import catalog

HEAVY = ("torch", "matplotlib", "optuna", "sklearn", "tqdm")


def imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted({{m.split('.')[0] for m in sys.modules}}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = eval(done.stdout.strip().splitlines()[-1])
    return [m for m in HEAVY if m in loaded]


def test_import_cli_imports_no_heavy_package():
    assert imported_after("import cnnlab, cnnlab.cli") == []


def test_help_and_models_import_no_heavy_package():
    code = ("from cnnlab.cli import main\nfor argv in (['models', '--json'], ['--help'], ['eval', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass")
    assert imported_after(code) == []


def test_stored_model_table_matches_the_model_sources():
    stored = json.loads(catalog.TABLE.read_text())
    assert stored["fingerprint"] == catalog.fingerprint(), "stale: run `python -m cnnlab.catalog`"
    assert {m["name"] for m in stored["models"]} >= {"resnet20", "vgg19_bn", "airbench94", "cnn"}
