"""Environments at three scales: ``bandit`` (this issue), ``seqpolicy`` and ``tasks`` (later issues)."""
