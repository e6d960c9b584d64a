"""`python -m forklab.doctor`: runs, reports what this process sees, and tells what to do on a WARN."""

import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

from forklab import doctor

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(OK  |WARN)  (\S.{0,17}) (.+)$")


def test_the_doctor_runs_and_reports_this_environment():
    run = subprocess.run([sys.executable, "-m", "forklab.doctor"], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    checks = {m.group(2).strip(): (m.group(1).strip(), m.group(3)) for m in map(LINE.match, lines) if m}
    for name in ["python", "torch", "transformers", "ipywidgets", "jupyterlab", "nbval", "matplotlib", "threads",
                 "cpu kernels", "gpu", "SmolLM2", "jupyter kernel", "chromium", "playwright"]:
        assert name in checks, f"no `{name}` line in:\n{run.stdout}"
    # facts read here, independently of the doctor
    assert checks["python"][1].startswith(platform.python_version())
    assert checks["torch"][1].startswith(torch.__version__)
    assert torch.backends.cpu.get_cpu_capability() in checks["cpu kernels"][1]
    assert ("CUDA" in checks["gpu"][1]) == torch.cuda.is_available()
    # every WARN says what to do, on the next line
    for i, line in enumerate(lines):
        if line.startswith("WARN"):
            assert lines[i + 1].strip().startswith("->"), line
    assert re.search(r"^\d+ OK, \d+ WARN", lines[-1])


def test_a_missing_chromium_warns_with_the_fix_and_strict_fails(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "CHROMIUM", Path("/nonexistent/chromium"))
    (chromium, _playwright) = doctor.check_browser()
    assert not chromium.ok and "not at /nonexistent/chromium" in chromium.found
    assert "apt-get install -y chromium" in chromium.fix and "FORKLAB_SKIP_BROWSER=1" in chromium.fix
    monkeypatch.setattr(doctor, "run_checks", lambda: [chromium])
    assert doctor.main(["--strict"]) == 1
    assert doctor.main([]) == 0
    assert "WARN  chromium" in capsys.readouterr().out


def test_a_version_that_differs_from_the_lock_warns(monkeypatch):
    monkeypatch.setattr(doctor, "_locked_versions", lambda: {"torch": "0.0.1"})
    torch_check = next(c for c in doctor.check_packages() if c.name == "torch")
    assert not torch_check.ok and "requirements.lock pins 0.0.1" in torch_check.found
    assert "make setup" in torch_check.fix
