"""Shared by make_text_classifier.py and make_text_lm.py; plain Python, no third-party imports.

Real English text: the licence texts Debian ships in /usr/share/common-licenses (package
base-files). And a deterministic BPE merge learner: the `tokenizers` trainers number the initial
alphabet in hash order and break ties between equally frequent pairs by those numbers, so two runs
give different vocabularies; the fixtures learn their merges here (ties broken by the pair's
strings) and build the `tokenizers` models from the result."""
import os
import re
from collections import Counter

LICENCE_DIR = "/usr/share/common-licenses"

_SENTENCE_END = re.compile(r"(?<=[.;:!?])\s+")


def read_licence(name):
    path = os.path.join(LICENCE_DIR, name)
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing: the text fixtures need Debian's base-files licence texts")
    with open(path, encoding="utf-8") as f:
        return f.read()


def paragraphs(text):
    """Blank-line separated paragraphs, whitespace normalised, empty ones dropped."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if para:
            out.append(para)
    return out


def sentences(text):
    """Sentence-like pieces: paragraphs split after . ; : ! ? followed by whitespace."""
    out = []
    for para in paragraphs(text):
        out.extend(s.strip() for s in _SENTENCE_END.split(para) if s.strip())
    return out


def chunks(text, min_words=6, max_words=40):
    """Sentence-like chunks of min_words..max_words words; a longer sentence is cut into
    consecutive max_words pieces (a remainder shorter than min_words is dropped)."""
    out = []
    for s in sentences(text):
        words = s.split()
        for i in range(0, len(words), max_words):
            piece = words[i:i + max_words]
            if len(piece) >= min_words:
                out.append(" ".join(piece))
    return out


def passages(text, min_words=28, max_words=44):
    """Passages of whole sentences, min_words..max_words words each (a sentence longer than
    max_words is cut); a trailing passage shorter than min_words is dropped."""
    out, cur = [], []
    for s in sentences(text):
        words = s.split()
        while words:
            room = max_words - len(cur)
            cur.extend(words[:room])
            words = words[room:]
            if len(cur) >= min_words:
                out.append(" ".join(cur))
                cur = []
    return out


def learn_merges(word_counts, max_symbols, join, min_count=2):
    """Byte-pair merges learnt greedily from {tuple of initial symbols: count}: each step merges
    the most frequent adjacent pair (ties: the smallest pair of strings) until max_symbols new
    symbols exist or no pair occurs min_count times. join(a, b) spells the merged symbol.
    Returns (merges as (a, b) pairs in order, new symbols in order of creation)."""
    words = [(list(w), c) for w, c in sorted(word_counts.items())]
    merges, new, known = [], [], set()
    for w, _ in words:
        known.update(w)
    while len(new) < max_symbols:
        pairs = Counter()
        for syms, c in words:
            for pair in zip(syms, syms[1:]):
                pairs[pair] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_count:
            break
        merged = join(*best)
        merges.append(best)
        if merged not in known:
            known.add(merged)
            new.append(merged)
        for syms, _ in words:
            i = 0
            while i < len(syms) - 1:
                if (syms[i], syms[i + 1]) == best:
                    syms[i:i + 2] = [merged]
                i += 1
    return merges, new


def byte_alphabet():
    """GPT-2's byte-to-unicode table: the 256 characters byte-level BPE spells bytes with, in
    byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) \
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    table, n = {b: b for b in bs}, 0
    for b in range(256):
        if b not in table:
            table[b] = 256 + n
            n += 1
    return [chr(table[b]) for b in range(256)]
