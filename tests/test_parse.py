"""Generated answers read back as option indices: the shapes models write, and what must not count."""

import pytest

from persona_bench.scoring.parse import Parsed, parse_answer, read_to_end, settled

LET = ("A", "B", "C", "D")
NUM = ("1", "2", "3", "4")
CITIES = ("London", "Paris", "Rome", "Berlin")
ROLE_NAMES = ("doctor", "software engineer", "mother", "teacher", "math teacher", "lawyer",
              "nurse", "chef", "pilot", "farmer", "police officer", "Paris, Texas")
ROLE_LABELS = tuple(str(i + 1) for i in range(len(ROLE_NAMES)))
RAMBLE = "\n\nQuestion: What is the capital of Italy? Options: 1. London, 2. Paris, 3. Rome, 4. Berlin.\nAnswer: 3"

# (generated text, labels, options, expected index or None)
PARSES = [
    ("2", NUM, CITIES, 1),
    (" 2", NUM, CITIES, 1),
    ("2.", NUM, CITIES, 1),
    ("2)", NUM, CITIES, 1),
    ("(2)", NUM, CITIES, 1),
    ("[2]", NUM, CITIES, 1),
    ("#2", NUM, CITIES, 1),
    ("2. Paris", NUM, CITIES, 1),
    ("2: Paris", NUM, CITIES, 1),
    ("2 \u2013 Paris", NUM, CITIES, 1),  # en dash
    ("\uff12\uff0e Paris", NUM, CITIES, 1),  # full-width "2."
    ("Option 2", NUM, CITIES, 1),
    ("option 2 is correct", NUM, CITIES, 1),
    ("The answer is 2", NUM, CITIES, 1),
    ("Answer 4", NUM, CITIES, 3),
    ("Number 3", NUM, CITIES, 2),
    ("The correct answer number is 3.", NUM, CITIES, 2),
    ("I would choose option 3: Rome", NUM, CITIES, 2),
    ("3\n\nQuestion: Which is largest? Options: 1. a, 2. b", NUM, CITIES, 2),
    ("2. Paris" + RAMBLE, NUM, CITIES, 1),
    ("2. Paris\n\n1. London is the capital of England.", NUM, CITIES, 1),  # later lines never override
    ("Let me think.\nThe answer is 3.", NUM, CITIES, 2),
    ("The answer is 2, not 3.", NUM, CITIES, 1),
    ("B", LET, CITIES, 1),
    ("B.", LET, CITIES, 1),
    ("(B) Paris", LET, CITIES, 1),
    ("**B**", LET, CITIES, 1),
    ("B is correct", LET, CITIES, 1),
    ("The answer is (B)", LET, CITIES, 1),
    ("Answer: B", LET, CITIES, 1),
    ("answer: b", LET, CITIES, 1),
    ("I think option c is right.", LET, CITIES, 2),
    ("A. London\nB. Paris", LET, CITIES, 0),  # first answer wins
    ("Paris", LET, CITIES, 1),
    ("  \"paris!\"  ", NUM, CITIES, 1),
    ("The answer is Paris.", NUM, CITIES, 1),
    ("Paris is the capital of France. It has the Eiffel Tower." + RAMBLE, NUM, CITIES, 1),
    ("Paris, Texas is where I was born.", NUM, ("Paris", "Paris, Texas", "Rome", "Berlin"), 1),  # longest wins
    ("Paris. It is lovely.", NUM, ("Paris", "Paris, Texas", "Rome", "Berlin"), 0),
    ("16", LET, ("4", "8", "16", "32"), 2),  # numeric option text: no clash with letter labels
    ("3. 16", NUM, ("4", "8", "16", "32"), 2),  # label and its own option's text
    ("1.5 cm", LET, ("1 cm", "1.5 cm", "15 cm", "5 cm"), 1),
    ("Paris", (), CITIES, 1),  # cloze: no labels, text only
    # roles: which of N listed roles the model picks
    ("5", ROLE_LABELS, ROLE_NAMES, 4),
    ("12", ROLE_LABELS, ROLE_NAMES, 11),
    ("10. farmer", ROLE_LABELS, ROLE_NAMES, 9),
    ("math teacher", ROLE_LABELS, ROLE_NAMES, 4),
    ("Teacher.", ROLE_LABELS, ROLE_NAMES, 3),
    ("Software Engineer", ROLE_LABELS, ROLE_NAMES, 1),
    ("A doctor, because I like helping people.", ROLE_LABELS, ROLE_NAMES, 0),
    ("I would choose to be a police officer.", ROLE_LABELS, ROLE_NAMES, 10),
    ("5. math teacher", ROLE_LABELS, ROLE_NAMES, 4),
]

MUST_NOT_PARSE = [
    ("", NUM, CITIES),
    ("   \n\t ", NUM, CITIES),
    ("I don't know", NUM, CITIES),
    ("I cannot answer that question.", NUM, CITIES),
    ("5", NUM, CITIES),
    ("Option 7", NUM, CITIES),
    ("E.", LET, CITIES),
    ("1945", NUM, CITIES),
    ("In 1990 the city grew.", NUM, CITIES),
    ("1.5", NUM, CITIES),
    ("2nd", NUM, CITIES),
    ("A or B", LET, CITIES),
    ("2 or 3", NUM, CITIES),
    ("either 1 or 4", NUM, CITIES),
    ("1, 2 and 3", NUM, CITIES),
    ("The answer is B or C.", LET, CITIES),
    ("None of the above", LET, CITIES),
    ("A good question. Let me think about it.", LET, CITIES),
    ("A person who lives in France would know.", LET, CITIES),
    ("As an AI, I have no opinion.", LET, CITIES),
    ("And so on.", LET, CITIES),
    ("The answer depends on the context.", LET, CITIES),
    ("The answer is a matter of opinion.", LET, CITIES),
    ("Paris or Rome", NUM, CITIES),
    ("Berlin is wrong, Paris is right.", NUM, CITIES),
    ("2. Berlin", NUM, CITIES),
    ("(B) Rome", LET, CITIES),
    ("Question: What is the capital of Spain?\nAnswer: 2", NUM, CITIES),
    ("b", LET, CITIES),  # a lone lower-case letter is no label without a marker
    ("two", NUM, CITIES),  # number words are not labels
    ("16", NUM, ("4", "8", "16", "32")),  # with number labels a numeric option's text never decides
    ("1 or 12", ROLE_LABELS, ROLE_NAMES),
    ("doctor or nurse", ROLE_LABELS, ROLE_NAMES),
    ("3. doctor", ROLE_LABELS, ROLE_NAMES),  # label 3 is mother
    ("I would like to be someone who helps.", ROLE_LABELS, ROLE_NAMES),
    ("Let me see.\nRoles: 1. doctor, 2. software engineer.\nAnswer: 2", ROLE_LABELS, ROLE_NAMES),  # a restated prompt
]


@pytest.mark.parametrize("text,labels,options,expected", PARSES)
def test_parses(text, labels, options, expected):
    got = parse_answer(text, labels, options)
    assert (got.index, got.parsed) == (expected, True), got


@pytest.mark.parametrize("text,labels,options", MUST_NOT_PARSE)
def test_does_not_parse(text, labels, options):
    got = parse_answer(text, labels, options)
    assert (got.index, got.parsed) == (None, False), got


@pytest.mark.parametrize("text,labels,options,rule", [
    ("2. Paris", NUM, CITIES, "label_start"),
    ("Answer: B", LET, CITIES, "marker"),
    ("The answer is Paris.", NUM, CITIES, "marker_text"),
    ("Paris", NUM, CITIES, "option_text"),
    ("", NUM, CITIES, "empty"),
    ("Question: What is 2+2?", NUM, CITIES, "new_question"),
    ("A or B", LET, CITIES, "ambiguous"),
    ("Paris or Rome", NUM, CITIES, "ambiguous"),
    ("2. Berlin", NUM, CITIES, "conflict"),
    ("Option 7", NUM, CITIES, "out_of_range"),
    ("I don't know", NUM, CITIES, "no_answer"),
])
def test_rule_names_why(text, labels, options, rule):
    assert parse_answer(text, labels, options).rule == rule


def test_teacher_inside_math_teacher():
    """A role whose name contains another's is matched by the longer name, in either position."""
    assert parse_answer("math teacher, since I love numbers", ROLE_LABELS, ROLE_NAMES).index == 4
    assert parse_answer("teacher, since I love kids", ROLE_LABELS, ROLE_NAMES).index == 3
    assert parse_answer("4. teacher", ROLE_LABELS, ROLE_NAMES).index == 3
    assert parse_answer("4. math teacher", ROLE_LABELS, ROLE_NAMES) == Parsed(None, "conflict")


def test_label_tokens_are_whole():
    """"1" never matches inside "12" of a 12-label list, and a label agrees with its own option's text."""
    assert parse_answer("12. Paris, Texas", ROLE_LABELS, ROLE_NAMES) == Parsed(11, "label_start")
    assert parse_answer("1", ROLE_LABELS, ROLE_NAMES).index == 0
    assert parse_answer("2x", NUM, CITIES).index is None


@pytest.mark.parametrize("text", [
    "None", "?!.,;:", "((((", "[]", "#", "**", "\U0001F600\U0001F914", "\u200b2\u200b", "A" * 5000,
    "2 " * 10000, "or or and , ,", "\\", "\x00\x01", "answer: " * 2000, "Option", "\u0661", "Q:",
])
@pytest.mark.parametrize("labels", [NUM, LET, ROLE_LABELS, (), ("I", "II", "III", "IV"), ("", "(a)")])
def test_never_raises(text, labels):
    got = parse_answer(text, labels, CITIES[: max(len(labels), 1)])
    assert isinstance(got, Parsed) and (got.index is None or 0 <= got.index < max(len(labels), 1))
    assert got.parsed == (got.index is not None)


def test_none_and_odd_options():
    assert parse_answer(None, NUM, CITIES) == Parsed(None, "empty")
    assert parse_answer("Paris", NUM, ["London", None, "Paris", ""]).index == 2
    assert parse_answer("London", NUM, ["London", "London", "Rome", "Berlin"]) == Parsed(None, "ambiguous")


# Texts as the embedded model writes them (scoring=generate, the self-pick) and edge cases of where a first line ends.
GENERATED = [
    (" 1. strA.compareTo(strB) < 0 && strB.compareTo(strA) < 0.\nAnswer: 2", NUM, CITIES),
    (" 4.\nExplanation:\nThe term is organic.", NUM, CITIES),
    (" 4. Structured.\n\nWhat is the term for the process? Options: 1. a", NUM, CITIES),
    (" 2 or\n3", NUM, CITIES),
    ("I think\nthe answer is 3\nQuestion: next", NUM, CITIES),
    ("Paris\nBerlin", NUM, CITIES),
    ("\n\n 3\n\nAnswer: 4", NUM, CITIES),
    ("3 options\n: 2", NUM, CITIES),  # a cut across the line break: "options\n:"
    ("3 Roles\n\uff1a 1", NUM, CITIES),  # a full-width colon is a colon
    ("Rome.\n\nRoles: 1. doctor", NUM, CITIES),
    ("B\nA", LET, CITIES),
    (" 12. Paris, Texas\nThe answer", ROLE_LABELS, ROLE_NAMES),
    (" I would choose to be a doctor\n\nQuestion", ROLE_LABELS, ROLE_NAMES),
    ("The answer is\n2", NUM, CITIES),
] + [(text, labels, options) for text, labels, options, _ in PARSES]


@pytest.mark.parametrize("text,labels,options", GENERATED)
def test_a_settled_answer_is_the_answer_of_every_longer_text(text, labels, options):
    """Generation stops a row once its text is settled (scoring.generate.decode): from that prefix on, the parsed answer
    must be the whole text's, whatever came after."""
    whole = parse_answer(text, labels, options)
    for k in range(len(text) + 1):
        if settled(text[:k], labels, options):
            assert parse_answer(text[:k], labels, options) == whole, (text[:k], whole)


def test_settled_waits_for_the_next_line_and_stops_at_a_cut():
    text = " 1. strA < strB.\nAnswer: 2"
    newline = text.index("\n")
    assert not settled(text[:newline + 1], NUM, CITIES)  # the line may still be cut: "...\n:" or go on
    assert settled(text[:newline + 2], NUM, CITIES)  # "A": the first line is complete and decides label 1
    assert not settled(" 1. strA", NUM, CITIES)
    assert not settled("I think\nthe answer", NUM, CITIES)  # the first line decides nothing: later lines count
    assert settled("I think\nthe answer\nQuestion:", NUM, CITIES)
    assert not settled("3 options\n", NUM, CITIES) and settled("3 options\n:", NUM, CITIES)
    assert not settled("2\n\ufffd", NUM, CITIES)  # a character whose bytes are not all decoded yet
    assert read_to_end(" 2\n\nRoles:") and read_to_end("Q:") and not read_to_end(" 2. The question is")


def test_a_long_line_is_normalized_only_as_far_as_its_options_need():
    """The answer-marker scan reads a line once per marker in it ("answer: " 2,000 times is one line): it normalizes
    only a prefix, with the same first characters as the whole line's normalized text, whatever the cut meets
    (punctuation runs, spaces, numbers, articles, full-width and format characters, casefold expansions)."""
    import random

    from persona_bench.scoring.parse import _norm, _norm_prefix

    pieces = ["the ", "a ", "Paris", " ", "   ", "!!!", "1.5", "-4", "50%", "2/3", ",", "\u200b", "\uff21", "Straße", "\n",
              "or", "x" * 30, "—", "(", "…", "e\u0301"]
    rng = random.Random(0)
    for _ in range(3000):
        s = "".join(rng.choice(pieces) for _ in range(rng.choice([2, 10, 60, 300])))
        need = rng.choice([2, 3, 5, 12, 40])
        assert _norm_prefix(s, need) == _norm(s)[:need], (s, need)
