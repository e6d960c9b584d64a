"""forklab: objectives and diagnostics for RL of language models, and the notebooks that teach them.

The package import is kept light (torch only); submodules are imported explicitly, e.g.
``from forklab import advantages, ops`` or ``from forklab.envs import bandit``.
"""

from forklab.seeding import seed_everything

__version__ = "0.1.0"
__all__ = ["seed_everything", "__version__"]
