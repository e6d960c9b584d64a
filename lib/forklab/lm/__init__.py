"""The tiny-LM scale and real models: character tokenizer, model build/save/load, sampling, trainers.

Introduced in ``notebooks/00_tour.ipynb``.

Submodules are imported explicitly, e.g. ``from forklab.lm.tokenizer import CharTokenizer``.
"""
