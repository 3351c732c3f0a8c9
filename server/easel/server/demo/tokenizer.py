"""A small CLIP byte-level BPE tokenizer, written from code (no download).

The vocabulary follows openai/clip-vit's layout: the 256 byte characters, the same with the
end-of-word mark ``</w>``, then one token per merge, then ``<|startoftext|>`` and
``<|endoftext|>``. Merges are chosen so that every word in ``words`` becomes a single token;
any other text still tokenizes, byte by byte. The result is a stock ``CLIPTokenizer``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _apply_bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges (lowest rank first), as CLIP does."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[str]]:
    """The vocabulary (token -> id) and merge list that make each of ``words`` one token."""
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        encoded = "".join(_bytes_to_unicode()[b] for b in word.lower().encode("utf-8"))
        while True:  # new merges rank last, so they never change how earlier words split
            syms = _apply_bpe(list(encoded[:-1]) + [encoded[-1] + "</w>"], ranks)
            if len(syms) == 1:
                break
            pair = (syms[0], syms[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            if pair[0] + pair[1] not in tokens:
                tokens.append(pair[0] + pair[1])
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, [f"{a} {b}" for a, b in merges]


def write_tokenizer_files(folder: str | Path, words: list[str]) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def make_tokenizer(words: list[str], max_length: int = 77) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` whose files are written to a temporary folder and read back."""
    with tempfile.TemporaryDirectory(prefix="easel-demo-tok-") as tmp:
        write_tokenizer_files(tmp, words)
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=max_length)


def vocab_size(words: list[str]) -> int:
    """How many ids the tokenizer built from ``words`` uses."""
    return len(build_vocab(words)[0])
