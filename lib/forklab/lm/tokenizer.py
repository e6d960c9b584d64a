"""A character tokenizer: one token per character of a small alphabet, plus PAD.

The tiny LMs of DESIGN.md ("scales") read and write strings over the alphabet of
:mod:`forklab.envs.tasks` (digits and ``+ - * = ; , >``), so the vocabulary is that alphabet and
nothing else worth a subword merge.

Decisions:

- PAD has id 0 and is the only special token. It never comes out of :meth:`CharTokenizer.encode`
  and :meth:`CharTokenizer.decode` drops it.
- EOS is the ordinary character ``;`` that ends every response (``eos_id`` is its id). It is not a
  separate token: a response "ends with ``;``" in the text, in the token ids and in the reward
  function alike, and ``generate(eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)`` stops there.
- No BOS: every prompt starts with a real character, and left-padded rows take their positions from
  the attention mask (``position_ids = mask.cumsum(-1) - 1``, see ``shared/reference/tiny-lm-facts.md``).

Ids: ``0`` = PAD, ``1 + i`` = ``alphabet[i]``, so ``vocab_size = len(alphabet) + 1`` (18 for the tasks).

Batching pads every row to the longest one; ``pad_side="left"`` for prompts to sample from (their
last tokens line up), ``"right"`` for training on whole texts::

    batch_encode(["1+2=", "10+20="], pad_side="left")
    ids  = [[0, 0, 2, 11, 3, 14],            mask = [[F, F, T, T, T, T],
            [2, 1, 11, 3, 1, 14]]                    [T, T, T, T, T, T]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from forklab import _checks
from forklab.envs import tasks

__all__ = ["CharTokenizer", "PAD_TOKEN"]

PAD_TOKEN = "<pad>"
_FORMAT = "forklab.CharTokenizer"


class CharTokenizer:
    """Characters of ``alphabet`` ↔ ids ``1..len(alphabet)``; PAD = 0; ``eos`` (a character) ends responses."""

    pad_id = 0

    def __init__(self, alphabet: str, eos: str | None = tasks.END) -> None:
        if not isinstance(alphabet, str) or not alphabet:
            raise ValueError(f"`alphabet` must be a non-empty str, got {alphabet!r}")
        repeated = sorted({c for c in alphabet if alphabet.count(c) > 1})
        if repeated:
            raise ValueError(f"`alphabet` must not repeat characters, got {''.join(repeated)!r} more than once")
        if eos is not None and (not isinstance(eos, str) or len(eos) != 1 or eos not in alphabet):
            raise ValueError(f"`eos` must be one character of the alphabet {alphabet!r} (or None), got {eos!r}")
        self.alphabet = alphabet
        self.eos = eos
        self._ids = {c: i + 1 for i, c in enumerate(alphabet)}

    @classmethod
    def for_tasks(cls) -> CharTokenizer:
        """The tokenizer of :mod:`forklab.envs.tasks`: its :data:`ALPHABET`, EOS = ``;``."""
        return cls(tasks.ALPHABET, eos=tasks.END)

    # ----- vocabulary ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + 1

    @property
    def vocab(self) -> list[str]:
        """Token strings by id: ``["<pad>", alphabet[0], ...]``."""
        return [PAD_TOKEN, *self.alphabet]

    @property
    def eos_id(self) -> int | None:
        return None if self.eos is None else self._ids[self.eos]

    def __len__(self) -> int:
        return self.vocab_size

    def __eq__(self, other) -> bool:
        return isinstance(other, CharTokenizer) and (self.alphabet, self.eos) == (other.alphabet, other.eos)

    def __hash__(self) -> int:
        return hash((self.alphabet, self.eos))

    def __repr__(self) -> str:
        return f"CharTokenizer(alphabet={self.alphabet!r}, eos={self.eos!r})"

    # ----- one string ------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, one per character; a character outside the alphabet is an error."""
        if not isinstance(text, str):
            raise ValueError(f"`text` must be a str, got {type(text).__name__}")
        try:
            return [self._ids[c] for c in text]
        except KeyError as err:
            c = err.args[0]
            raise ValueError(f"`text` contains the character {c!r} (at position {text.index(c)}), which is not in "
                             f"the tokenizer alphabet {self.alphabet!r}") from None

    def decode(self, ids, stop_at_eos: bool = False) -> str:
        """The text of ``ids`` (a list or 1-D tensor), PAD dropped; ``stop_at_eos`` cuts after the first EOS."""
        if isinstance(ids, Tensor):
            if ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
                raise ValueError(f"`ids` must be a 1-D integer tensor, got {list(ids.shape)} {ids.dtype}")
            ids = ids.tolist()
        out = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.vocab_size:
                raise ValueError(f"`ids` must hold token ids in [0, {self.vocab_size}), got {i!r}")
            if i == self.pad_id:
                continue
            out.append(self.alphabet[i - 1])
            if stop_at_eos and i == self.eos_id:
                break
        return "".join(out)

    # ----- batches ---------------------------------------------------------------------------
    def batch_encode(self, texts: Sequence[str], pad_side: str = "left") -> tuple[Tensor, Tensor]:
        """Encode and pad to the longest text: ``ids [B, L]`` long and ``attention_mask [B, L]`` bool.

        ``attention_mask`` is True on real characters, False on PAD; ``L = max len(text)``.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
            raise ValueError(f"`texts` must be a non-empty list of str, got {texts!r:.60}")
        _checks.choice("pad_side", pad_side, {"left", "right"})
        rows = [self.encode(t) for t in texts]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for b, row in enumerate(rows):
            cols = slice(length - len(row), length) if pad_side == "left" else slice(0, len(row))
            ids[b, cols] = torch.tensor(row, dtype=torch.long)
            mask[b, cols] = True
        return ids, mask

    def batch_decode(self, ids, stop_at_eos: bool = False) -> list[str]:
        """:meth:`decode` of every row of a ``[B, L]`` tensor (or a list of lists)."""
        if isinstance(ids, Tensor) and ids.dim() != 2:
            raise ValueError(f"`ids` must have shape [B, L], got {list(ids.shape)}")
        return [self.decode(row, stop_at_eos) for row in ids]

    # ----- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": 1, "alphabet": self.alphabet, "eos": self.eos, "pad": PAD_TOKEN}

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer as JSON (no pickle); returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"`path` {str(path)!r} is not a readable tokenizer JSON file: {err}") from err
        if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("version") != 1:
            raise ValueError(f"`path` {str(path)!r} does not hold a {_FORMAT} (version 1)")
        return cls(data["alphabet"], eos=data.get("eos"))
