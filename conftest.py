"""Repository-wide pytest configuration.

It lives at the root (not in tests/) so that it is loaded both for the unit tests and for
`pytest --nbval notebooks/...`: Jupyter kernels started by nbval inherit this process's
environment, so whatever they need for determinism is set here, before any kernel starts.
The Makefile exports the same variables for `make figures`, so stored and re-run outputs agree.
"""

import os
import tempfile

KERNEL_ENV = {
    "PYTHONHASHSEED": "0",  # set/dict iteration order in kernels
    "TQDM_DISABLE": "1",  # tqdm.auto draws timing text that would differ run to run
    "OMP_NUM_THREADS": "1",  # a fixed thread count keeps float reductions in one order
    "MKL_NUM_THREADS": "1",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # silences a debugger warning on kernel start
    "JUPYTER_PLATFORM_DIRS": "1",
}

for key, value in KERNEL_ENV.items():
    os.environ.setdefault(key, value)

# Tests never write tracked files: figures saved by notebooks under nbval (and by unit tests) go to a
# temporary folder; `make figures` (no pytest) writes figures/.
os.environ.setdefault("FORKLAB_FIGURES", tempfile.mkdtemp(prefix="forklab-figures-"))
