"""Environments at three scales: ``bandit``, ``seqpolicy`` and ``tasks`` (all met in ``notebooks/00_tour.ipynb``)."""
