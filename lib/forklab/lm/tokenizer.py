"""A character tokenizer: one token per character of a small alphabet, plus PAD.

The tiny LMs of README.md ("Four scales") read and write strings over the alphabet of
:mod:`forklab.envs.tasks` (digits and ``+ - * = ; , >``), so the vocabulary is that alphabet and
nothing else worth a subword merge.

Decisions:

- PAD has id 0 and is the only special token. It never comes out of :meth:`CharTokenizer.encode`
  and :meth:`CharTokenizer.decode` drops it.
- EOS is the ordinary character ``;`` that ends every response (``eos_id`` is its id). It is not a
  separate token: a response "ends with ``;``" in the text, in the token ids and in the reward
  function alike, and ``generate(eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)`` stops there.
- No BOS: every prompt starts with a real character, and left-padded rows take their positions from
  the attention mask (``position_ids = mask.cumsum(-1) - 1``, see ``data/models/README.md``).

Ids: ``0`` = PAD, ``1 + i`` = ``alphabet[i]``, so ``vocab_size = len(alphabet) + 1`` (18 for the tasks).

Batching pads every row to the longest one; ``pad_side="left"`` for prompts to sample from (their
last tokens line up), ``"right"`` for training on whole texts::

    batch_encode(["1+2=", "10+20="], pad_side="left")
    ids  = [[0, 0, 2, 11, 3, 14],            mask = [[F, F, T, T, T, T],
            [2, 1, 11, 3, 1, 14]]                    [T, T, T, T, T, T]]

:class:`HFTokenizer` gives a Hugging Face tokenizer the same interface (``batch_encode``, ``decode``,
``eos_id``, ``pad_id``, ``vocab_size``), so ``RLTrainer`` and ``evaluate`` run real LMs on text tasks
such as GSM8K. With ``chat=True`` each prompt becomes one user turn of the model's chat template,
ending with the assistant header (``add_generation_prompt=True``); EOS is then the end-of-turn token
(``<|im_end|>`` for Qwen2.5 / SmolLM2 instruct models), so sampling stops when the answer is over.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from forklab import _checks
from forklab.envs import tasks

__all__ = ["CharTokenizer", "HFTokenizer", "PAD_TOKEN"]

PAD_TOKEN = "<pad>"
_FORMAT = "forklab.CharTokenizer"


def pad_rows(rows: list[list[int]], pad_id: int, pad_side: str = "left") -> tuple[Tensor, Tensor]:
    """Token rows → ``ids [B, L]`` long padded with ``pad_id`` and ``attention_mask [B, L]`` bool (L = longest row)."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for b, row in enumerate(rows):
        cols = slice(length - len(row), length) if pad_side == "left" else slice(0, len(row))
        ids[b, cols] = torch.tensor(row, dtype=torch.long)
        mask[b, cols] = True
    return ids, mask


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
        return pad_rows([self.encode(t) for t in texts], self.pad_id, pad_side)

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

    def to_hf(self):
        """The same tokenizer as a ``transformers`` ``PreTrainedTokenizerFast`` (same ids, PAD = 0).

        One token per character (a WordLevel model behind a one-character split), EOS = :attr:`eos`, left
        padding. EOS becomes a *special* token there, so ``decode(..., skip_special_tokens=True)`` (what TRL
        does to completions) drops the ``;`` that ends a response and leaves exactly the answer, which
        ``forklab.envs.tasks.reward_function`` scores (reading ``completion_ids`` for truncation).
        """
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(self.vocab)}, unk_token=PAD_TOKEN))
        core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        core.decoder = decoders.Fuse()
        return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD_TOKEN, eos_token=self.eos,
                                       padding_side="left")

    def save_hf(self, folder: str | Path) -> Path:
        """Write the Hugging Face files (``tokenizer.json``, ``tokenizer_config.json``, ...) of :meth:`to_hf`
        into ``folder``, so ``AutoTokenizer.from_pretrained(folder)`` loads this tokenizer."""
        folder = Path(folder)
        self.to_hf().save_pretrained(folder)
        return folder

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


class HFTokenizer:
    """A ``transformers`` tokenizer behind :class:`CharTokenizer`'s interface (what ``RLTrainer`` uses).

    ``chat``: wrap each prompt as a user message in the tokenizer's chat template (with
    ``add_generation_prompt=True`` and, if given, a ``system`` message first); default: True when the
    tokenizer has a chat template. Templated text is tokenised without adding special tokens again.
    ``eos_id``: where sampling stops; default ``tokenizer.eos_token_id`` (for instruct models the
    end-of-turn token). ``pad_id``: default the tokenizer's pad token, else ``eos_id``. Padding is done
    here (either side), whatever the tokenizer's own ``padding_side``.
    """

    def __init__(self, tokenizer, chat: bool | None = None, system: str | None = None, eos_id: int | None = None,
                 pad_id: int | None = None) -> None:
        if not callable(getattr(tokenizer, "encode", None)) or not callable(getattr(tokenizer, "decode", None)):
            raise ValueError(f"`tokenizer` must be a transformers tokenizer, got {type(tokenizer).__name__}")
        has_template = bool(getattr(tokenizer, "chat_template", None))
        chat = has_template if chat is None else chat
        if not isinstance(chat, bool):
            raise ValueError(f"`chat` must be a bool or None, got {chat!r}")
        if chat and not has_template:
            raise ValueError("`chat`=True needs a tokenizer with a chat template (tokenizer.chat_template is empty)")
        if system is not None and (not isinstance(system, str) or not chat):
            raise ValueError(f"`system` must be a str and needs chat=True, got {system!r} with chat={chat}")
        self.tokenizer, self.chat, self.system = tokenizer, chat, system
        size = len(tokenizer)
        eos_id = tokenizer.eos_token_id if eos_id is None else eos_id
        self._eos = self._check_id("eos_id", eos_id, size, optional=True)
        pad_id = tokenizer.pad_token_id if pad_id is None else pad_id
        pad_id = self._eos if pad_id is None else pad_id
        if pad_id is None:
            raise ValueError("`pad_id`: the tokenizer has neither a pad nor an eos token; pass pad_id")
        self._pad = self._check_id("pad_id", pad_id, size, optional=False)

    @staticmethod
    def _check_id(name: str, value, size: int, optional: bool) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
            raise ValueError(f"`{name}` must be a token id in [0, {size}), got {value!r}")
        return value

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (``len(tokenizer)``; the model's may be padded larger)."""
        return len(self.tokenizer)

    @property
    def eos_id(self) -> int | None:
        """The token that ends a response (sampling stops after it)."""
        return self._eos

    @property
    def pad_id(self) -> int:
        """The id written in padded positions (never attended to)."""
        return self._pad

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.tokenizer).__name__}, chat={self.chat}, eos_id={self.eos_id}, " \
               f"pad_id={self.pad_id})"

    def format_prompt(self, text: str) -> str:
        """The text the model reads for prompt ``text``: the chat-templated user turn, or ``text`` itself."""
        if not isinstance(text, str):
            raise ValueError(f"`text` must be a str, got {type(text).__name__}")
        if not self.chat:
            return text
        messages = ([{"role": "system", "content": self.system}] if self.system is not None else []) + \
            [{"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt: :meth:`format_prompt`, then the tokenizer (special tokens added only without chat)."""
        ids = self.tokenizer(self.format_prompt(text), add_special_tokens=not self.chat)["input_ids"]
        return list(ids)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """The text of ``ids`` (a list or 1-D integer tensor); special tokens (EOS, PAD) dropped by default."""
        if isinstance(ids, Tensor):
            if ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
                raise ValueError(f"`ids` must be a 1-D integer tensor, got {list(ids.shape)} {ids.dtype}")
            ids = ids.tolist()
        if isinstance(ids, str) or not isinstance(ids, Sequence):
            raise ValueError(f"`ids` must be a list or 1-D tensor of token ids, got {type(ids).__name__}")
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch_encode(self, texts: Sequence[str], pad_side: str = "left") -> tuple[Tensor, Tensor]:
        """Encode and pad to the longest prompt: ``ids [B, L]`` long and ``attention_mask [B, L]`` bool."""
        if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
            raise ValueError(f"`texts` must be a non-empty list of str, got {texts!r:.60}")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"`texts` must hold only str, got {type(texts[bad[0]]).__name__} at index {bad[0]}")
        _checks.choice("pad_side", pad_side, {"left", "right"})
        rows = [self.encode(t) for t in texts]
        empty = [i for i, r in enumerate(rows) if not r]
        if empty:
            raise ValueError(f"`texts` holds prompts that encode to no tokens, at indices {empty}")
        return pad_rows(rows, self.pad_id, pad_side)

    def batch_decode(self, ids, skip_special_tokens: bool = True) -> list[str]:
        """:meth:`decode` of every row of a ``[B, L]`` tensor (or a list of lists)."""
        if isinstance(ids, Tensor) and ids.dim() != 2:
            raise ValueError(f"`ids` must have shape [B, L], got {list(ids.shape)}")
        return [self.decode(row, skip_special_tokens) for row in ids]
