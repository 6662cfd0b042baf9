"""Reading a multiple-choice answer out of generated text (scoring=generate).

The first answer counts: a small base model often goes on with a new question and
answers it too, so the text is cut at the first "Question:", "Q:", "Options:",
"Choices:" or "Roles:" (the self-pick prompt's list), and the first non-empty line
decides before later lines are read.
Rules, the first that decides wins (`Parsed.rule` names it):

  label_start  the first line starts with a label: "2", "(2)", "[2]", "#2", "2. Paris", "**B**"
  marker       an answer marker then a label, first in the first line: "Answer: b", "Option 3",
               "The answer is (B)", "The correct answer number is 3", "I would choose option 3: Paris"
  marker_text  a marker then an option's text: "The answer is Paris.", "I would choose to be a doctor"
  option_text  the first line equals or starts with one option's text ("Paris, Texas is ...")
               and names no other option
  marker, marker_text on the later lines (before the cut)

Nothing decides: "empty", "new_question" (the text starts with one), "ambiguous" (two
labels as alternatives: "A or B", "either 1 or 4", "1, 2 and 3"; two options' texts),
"conflict" (a label followed by another option's text: "2. Berlin" where Berlin is
option 4; neither is trusted), "out_of_range" ("5" or "Option 7" of four), "no_answer".

Labels match as whole tokens ("2" not in "12", "2nd", "1.5" or "1945"). Letter labels
count in upper case; lower case ("answer: b") only after a marker. At the start of the
first line an upper-case letter followed by a lower-case word is an article or pronoun
("A person who", "I think"), not a label. Number words ("two") are not labels.

Option texts are compared casefolded, without punctuation, quotes, markdown or a leading
article, with spaces collapsed; the longest option that the text equals or starts with
wins ("Paris" vs "Paris, Texas"). Where labels exist, an option's text alone does not
decide when it is shorter than 2 characters, or numeric while the labels are numbers
("4" of labels 1-4 reads as the label; "16" could be a mistyped label). Right after a
label every option's text is checked, so "3. 16" agrees with or contradicts label 3.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Parsed:
    index: Optional[int]  # 0-based index of the chosen option; None when the text names no single option
    rule: str  # the rule that decided, or why none did (see the module docstring)

    @property
    def parsed(self) -> bool:
        return self.index is not None


_CHARS = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
                        "\u2212": "-", "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"',
                        "\u201e": '"', "*": None, "`": None})
_CUT = re.compile(r"(?<!\w)(?:questions?|options|choices|roles|q)\s*:", re.I)  # the model writes a new question
_MARKER = re.compile(
    r"(?:(?<!\w)(?:answer|option|choice|number|response)s?(?:\s+(?:number|no\.?))?"
    r"(?:\s*(?:(?:is|would\s+be|will\s+be|should\s+be|must\s+be)\b|[:=-]))*"
    r"|(?<!\w)(?:choose|chose|choosing|pick|picked|select|selected|go\s+with)\b(?:\s+to\s+be)?)"
    r"(?:\s*(?:option|choice|answer|number)\b)?", re.I)
_OPEN = re.compile(r"[\s(\[{#\"'>]*")  # what may stand before a label: "(B)", "#2", "> 2"
_LIST = re.compile(r"\s*[)\]]?\s*(?:,|&|/|\bor\b|\band\b|\bnor\b|\bvs\b\.?)\s*"
                   r"(?:(?:either|both|options?|choices?|answers?|numbers?)\s+)*[(\[]?\s*", re.I)
_ARTICLE = re.compile(r"\s+(?!(?:is|was|or|and|nor)\b)[a-z]")  # "A person", "I think"; not "B is", "A or B"
_NUMERIC = re.compile(r"^[-\d.,/: %]+$")


def _clean(text: str) -> str:
    """Full-width forms, unicode dashes and quotes folded; markdown emphasis and format characters dropped."""
    text = unicodedata.normalize("NFKC", text).translate(_CHARS)
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def _norm(s: str) -> str:
    """An option's text for comparison: casefolded, punctuation to spaces (not inside numbers
    such as 1.5, 2/3, -4, 50%), spaces collapsed, a leading article dropped."""
    s = _clean(s).casefold()
    out = []
    for k, c in enumerate(s):
        nxt, prev = s[k + 1:k + 2], s[k - 1:k] if k else ""
        keep = (c == "%" or (c in ".,/:" and prev.isdigit() and nxt.isdigit())
                or (c == "-" and nxt.isdigit() and not prev.isalnum()))
        out.append(" " if unicodedata.category(c).startswith("P") and not keep else c)
    return re.sub(r"^(?:a|an|the) (?=\S)", "", " ".join("".join(out).split()))


def _norm_prefix(s: str, need: int) -> str:
    """The first `need` characters of _norm(s) (all of it when shorter), normalizing no more of a long line than
    that takes: a line is read once per answer marker in it, and "answer: answer: ..." has thousands. Cutting s
    changes only the last characters of its normalized text (a character's neighbours, a trailing space), so a
    cut whose text is longer than `need` by a margin has the same first `need` characters."""
    k = 8 * need + 64
    while k < len(s):
        t = _norm(s[:k])
        if len(t) >= need + 4:
            return t[:need]
        k *= 4
    return _norm(s)[:need]


class _Labels:
    """The labels as tokens: digits, single letters, or (anything else) the labels' exact strings."""

    def __init__(self, labels: Sequence[str]):
        self.labels = [str(x).strip() for x in labels]
        ls = [x for x in self.labels if x]
        if ls and all(x.isdigit() for x in ls):
            self.kind, pat = "digits", r"(?<!\w)(?<!\d[.,/:])\d+(?!\w)(?![.,/:]\d)"
        elif ls and all(len(x) == 1 and x.isascii() and x.isalpha() for x in ls):
            self.kind, pat = "letters", r"(?<![\w'-])[A-Za-z](?![\w'-])(?!\.\w)"
        else:
            alts = "|".join(re.escape(x) for x in sorted(ls, key=len, reverse=True))
            self.kind, pat = "other", (rf"(?<!\w)(?:{alts})(?!\w)" if alts else r"(?!)")
        self.re = re.compile(pat)
        self.index = {self.key(x): i for i, x in reversed(list(enumerate(self.labels))) if x}

    def key(self, token: str) -> str:
        return token.upper() if self.kind == "letters" else token

    def at(self, s: str, pos: int, lower: bool = False) -> Optional[re.Match]:
        """The label-like token starting at `pos` (lower-case letters only when `lower`)."""
        m = self.re.match(s, pos)
        return None if m is None or (self.kind == "letters" and m.group().islower() and not lower) else m

    def lookup(self, m: re.Match, notes: list) -> Optional[int]:
        i = self.index.get(self.key(m.group()))
        if i is None and self.kind != "other":
            notes.append("out_of_range")
        return i


def _longest(t: str, cands: list) -> Optional[int]:
    """The option whose text `t` equals or starts with, the longest such; -1 for a tie between two options."""
    hits = [(len(n), i) for i, n in cands if t == n or t.startswith(n + " ")]
    if not hits:
        return None
    size = max(hits)[0]
    best = {i for n, i in hits if n == size}
    return best.pop() if len(best) == 1 else -1


def _decide(i: int, after: str, rule: str, lab: _Labels, every: list) -> Parsed:
    """Label `i`, checked against what follows it: its own option's text agrees, another's conflicts,
    'or'/'and'/',' with another label is ambiguous."""
    j = _longest(_norm(after), every)
    if j is not None and j != -1:  # -1: two options share the text; the label decides
        return Parsed(i, rule) if j == i else Parsed(None, "conflict")
    m = _LIST.match(after)
    other = lab.at(after, m.end()) if m else None
    if other and lab.key(other.group()) != lab.key(lab.labels[i]):
        return Parsed(None, "ambiguous")
    return Parsed(i, rule)


def _markers(seg: str, lab: _Labels, every: list, cands: list, notes: list) -> Optional[Parsed]:
    """The first answer marker in `seg` followed by a label or an option's text."""
    need = max((len(n) for _, n in cands), default=0) + 1  # of a line's normalized text, to match an option's
    for mk in _MARKER.finditer(seg):
        pos = _OPEN.match(seg, mk.end()).end()
        line = seg[pos:].split("\n", 1)[0]
        tok = lab.at(line, 0, lower=True)
        if tok and tok.group().islower() and not re.search(r"option|choice", mk.group(), re.I) \
                and re.match(r"\s*\w", line[tok.end():]):
            tok = None  # "the answer is a matter of ...": an article, not label A
        if tok:
            i = lab.lookup(tok, notes)
            if i is not None:
                return _decide(i, line[tok.end():], "marker", lab, every)
            continue
        if not cands:
            continue
        j = _longest(_norm_prefix(line, need), cands)
        if j == -1:
            return Parsed(None, "ambiguous")
        if j is not None:
            t = _norm(line)  # what follows the option's text decides: all of the line
            n = dict(cands)[j]
            rest = re.sub(r"^(?:(?:or|and|nor|vs|either|both|maybe)\s+)+", "", t[len(n):].strip())
            return Parsed(None, "ambiguous") if _longest(rest, cands) not in (None, j) else Parsed(j, "marker_text")
    return None


def _prepare(text: str, labels: Sequence[str], options: Sequence[str]):
    """The cleaned text's answer lines (cut at the first new question) and the labels and options to match."""
    text = _clean("" if text is None else str(text))
    cut = _CUT.search(text)
    body = text[:cut.start()] if cut else text
    lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
    lab = _Labels(labels)
    norms = [_norm("" if o is None else str(o)) for o in options]
    every = [(i, n) for i, n in enumerate(norms) if n]
    cands = every if not lab.index else [
        (i, n) for i, n in every if len(n) >= 2 and not (lab.kind == "digits" and _NUMERIC.match(n))]
    return text, lines, lab, every, cands


def _head(head: str, lab: _Labels, every: list, cands: list, notes: list) -> Optional[Parsed]:
    """What the first line alone decides (the rules before the later lines are read), or None."""
    for m in lab.re.finditer(head):  # "A or B", "either 1 or 4", "1, 2 and 3" anywhere in the first line
        if (lab.kind == "letters" and m.group().islower()) or lab.key(m.group()) not in lab.index:
            continue
        sep = _LIST.match(head, m.end())
        other = lab.at(head, sep.end()) if sep else None
        if other and lab.key(other.group()) in lab.index and lab.key(other.group()) != lab.key(m.group()):
            return Parsed(None, "ambiguous")

    tok = lab.at(head, _OPEN.match(head).end())
    if tok and not (lab.kind == "letters" and _ARTICLE.match(head, tok.end())):
        i = lab.lookup(tok, notes)
        if i is not None:
            return _decide(i, head[tok.end():], "label_start", lab, every)
    found = _markers(head, lab, every, cands, notes)
    if found:
        return found
    t = _norm(head)
    j = _longest(t, cands)
    if j is not None:
        n = "" if j == -1 else dict(cands)[j]
        rest = t[len(n):]
        if j == -1 or any(re.search(rf"(?<!\S){re.escape(m)}(?!\S)", rest) for k, m in cands if k != j):
            return Parsed(None, "ambiguous")
        return Parsed(j, "option_text")
    return None


def parse_answer(text: str, labels: Sequence[str], options: Sequence[str]) -> Parsed:
    """The option that generated `text` chooses, by the rules in the module docstring. Never raises."""
    text, lines, lab, every, cands = _prepare(text, labels, options)
    if not text.strip():
        return Parsed(None, "empty")
    if not lines:
        return Parsed(None, "new_question")
    notes: list = []
    found = _head(lines[0], lab, every, cands, notes) or _markers("\n".join(lines[1:]), lab, every, cands, notes)
    if found:
        return found
    return Parsed(None, notes[0] if notes else "no_answer")

def read_to_end(text: str) -> bool:
    """True once `text` holds a cut (a new "Question:", "Q:", "Options:", "Choices:", "Roles:"): parse_answer
    reads nothing from there on, so nothing a model writes after it can change the parsed answer
    (scoring.generate.decode stops the row). The first cut of any longer text starting with `text` is this one: an
    earlier one would have to end inside `text` (a cut is a word, spaces, then ":", and the match found
    here starts after a non-word character)."""
    return _CUT.search(_clean(text)) is not None



_SEAL = re.compile(r"\S", re.S)


def settled(text: str, labels: Sequence[str], options: Sequence[str]) -> bool:
    """True when parse_answer gives the same answer for `text` and for every text that starts with it: a
    cut is there (read_to_end), or the first line is complete and decides by itself (label_start, marker,
    marker_text, option_text, or ambiguous/conflict there). Complete: after its line break comes a
    character that is neither a space, nor ":" (which could make the line's last word a cut, "Options\n:"),
    nor U+FFFD (a character whose bytes are not all written yet). scoring.generate.decode stops the row there."""
    if read_to_end(text):
        return True
    clean, lines, lab, every, cands = _prepare(text, labels, options)
    if not lines:
        return False
    start = clean.find(lines[0])
    ends = [m.end() for m in re.finditer(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]", clean[start:])]
    if not ends:
        return False
    nxt = _SEAL.search(clean, start + ends[0])
    if nxt is None or nxt.group() in ":\ufffd":
        return False
    return _head(lines[0], lab, every, cands, []) is not None
