"""text_similarity's metrics, each 0–1, and 1.0 for identical answers in every script.

- `fuzzy_match`: rapidfuzz `fuzz.WRatio` with `utils.default_process` (lower case, punctuation to spaces,
  trimmed) / 100 — what OpenAI's graders guide uses in its fuzzy-matching example
  (developers.openai.com/api/docs/guides/graders, "Python graders"); the guide says only that the
  text_similarity grader's fuzzy_match "uses rapidfuzz".
- `bleu`: sentence BLEU as sacrebleu computes it by default (`sacrebleu.sentence_bleu`: the 13a tokenizer,
  4-grams, exponential smoothing, effective order, so a one-word answer is not judged on the 4-grams it
  cannot have; Post, "A Call for Clarity in Reporting BLEU Scores", WMT 2018). Written here (sacrebleu pulls
  in lxml and more for its data sets) and compared with sacrebleu in tests/unit/test_evaluation_graders.py.
- `gleu`: nltk's `sentence_gleu` on the tokens below.
- `rouge_*`: Google's `rouge-score` (ROUGE-n on an answer shorter than n words: the longest order both
  have) with a tokenizer that keeps every script: words are runs of letters
  and digits in any script (Unicode `\\w`), lower-cased with `casefold`; Chinese, Japanese and Thai, written
  without spaces, count one token per character; Latin words keep the Porter stemmer rouge-score applies
  by default. (rouge-score's own tokenizer drops every non-ASCII letter, so identical Japanese, Russian or
  Greek answers scored 0.)
"""
from __future__ import annotations

import math
import re
from collections import Counter
from functools import cache, lru_cache
from typing import Any

ROUGE = {f"rouge_{n}": f"rouge{n}" for n in range(1, 6)} | {"rouge_l": "rougeL"}
METRICS = ("fuzzy_match", "bleu", "gleu", *ROUGE)

# Scripts written without spaces between words: one token per character.
_UNSPACED = ("\u3040-\u30ff"          # Hiragana, Katakana
             "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"   # CJK ideographs
             "\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff")   # Thai, Lao, Myanmar, Khmer
_WORDS = re.compile(rf"[{_UNSPACED}]|[^\W{_UNSPACED}_]+")


def tokens(text: str) -> list[str]:
    return _WORDS.findall(text.casefold())


def string_check(operation: str, answer: str, reference: str) -> float:
    """Azure's string_check: eq/ne compare whole strings; like = contains; ilike = contains, any case
    (Unicode case folding: "STRASSE" contains "straße")."""
    if operation == "eq":
        return float(answer == reference)
    if operation == "ne":
        return float(answer != reference)
    if operation == "like":
        return float(reference in answer)
    if operation == "ilike":
        return float(reference.casefold() in answer.casefold())
    raise ValueError(f"unknown string_check operation {operation!r}")


def similarity(metric: str, answer: str, reference: str) -> float:
    if metric == "fuzzy_match":
        return fuzzy_match(answer, reference)
    if metric == "bleu":
        return bleu(answer, reference)
    if metric in ROUGE:
        return rouge(ROUGE[metric], answer, reference)
    if metric == "gleu":
        hypothesis, reference_tokens = tokens(answer), tokens(reference)
        if not hypothesis or not reference_tokens:
            return float(hypothesis == reference_tokens and answer.strip() == reference.strip())
        from nltk.translate.gleu_score import sentence_gleu
        return float(sentence_gleu([reference_tokens], hypothesis))
    raise ValueError(f"unknown text_similarity metric {metric!r}")


def fuzzy_match(answer: str, reference: str) -> float:
    from rapidfuzz import fuzz, utils
    if not utils.default_process(answer) and not utils.default_process(reference):
        return float(answer.strip() == reference.strip())   # nothing but punctuation on both sides
    return float(fuzz.WRatio(answer, reference, processor=utils.default_process)) / 100.0


def rouge(kind: str, answer: str, reference: str) -> float:
    """rouge-score's F-measure; ROUGE-n on answers shorter than n words reads the longest n-grams both have
    (as BLEU's effective order does), so an identical two-word answer is 1.0 on rouge_3 too."""
    shortest = min(len(tokens(answer)), len(tokens(reference)))
    if not shortest:
        return float(answer.strip() == reference.strip())
    if kind != "rougeL" and int(kind[5:]) > shortest:
        kind = f"rouge{shortest}"
    return float(_scorer(kind).score(reference, answer)[kind].fmeasure)


class _Tokenizer:
    """rouge-score's tokenizer interface: every script kept; Porter stems on ASCII words only. Stems and
    tokenised texts are cached (every candidate's answer is compared with the same references)."""

    def __init__(self) -> None:
        from nltk.stem import porter
        self._stem = lru_cache(maxsize=1 << 15)(porter.PorterStemmer().stem)
        self._tokens = lru_cache(maxsize=1 << 12)(self._tokenize)

    def _tokenize(self, text: str) -> tuple[str, ...]:
        return tuple(self._stem(t) if t.isascii() and len(t) > 3 else t for t in tokens(text))

    def tokenize(self, text: str) -> list[str]:
        return list(self._tokens(text))


@cache
def _scorer(kind: str) -> Any:
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer([kind], tokenizer=_Tokenizer())


# --- BLEU as sacrebleu.sentence_bleu -----------------------------------------------------------------------
_13A = [(re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),   # punctuation apart
        (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),                 # period, comma unless after a digit
        (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),                 # … unless before a digit
        (re.compile(r"([0-9])(-)"), r"\1 \2 ")]                      # a dash after a digit


def tokenize_13a(line: str) -> list[str]:
    """mteval-v13a's tokenizer, as sacrebleu's `tokenize="13a"` (its default)."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _13A:
        line = pattern.sub(replacement, line)
    return line.split()


def bleu(answer: str, reference: str, max_order: int = 4) -> float:
    """Sentence BLEU / 100 as `sacrebleu.sentence_bleu(answer, [reference])` with its defaults: exponential
    smoothing (the k-th order without a match counts 1 / 2^k), effective order, brevity penalty."""
    hypothesis, ref = tokenize_13a(answer.strip()), tokenize_13a(reference.strip())
    if not hypothesis or not ref:
        return float(not hypothesis and not ref)
    matches, totals = [0] * max_order, [0] * max_order
    for n in range(1, max_order + 1):
        have = Counter(tuple(hypothesis[i:i + n]) for i in range(len(hypothesis) - n + 1))
        want = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        matches[n - 1] = sum((have & want).values())
        totals[n - 1] = max(0, len(hypothesis) - n + 1)
    if matches[0] == 0:
        return 0.0
    effective = max_order
    for n in range(1, max_order + 1):
        if totals[n - 1] == 0:   # effective order: stop where the answer has no n-grams left
            effective = n - 1
            break
    log_sum, unmatched = 0.0, 1
    for n in range(effective):
        if matches[n] == 0:
            unmatched *= 2
            log_sum += math.log(100.0 / (unmatched * totals[n]))
        else:
            log_sum += math.log(100.0 * matches[n] / totals[n])
    score = math.exp(log_sum / effective) if effective else 0.0
    penalty = 1.0 if len(hypothesis) > len(ref) else math.exp(1 - len(ref) / len(hypothesis))
    return min(1.0, penalty * score / 100.0)
