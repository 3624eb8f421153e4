#!/usr/bin/env python3
"""Checks anchor_examples.jsonl and category_examples.jsonl: they parse, the
fields and labels are right, counts meet the minimums, no exact or
near-exact duplicates (within and across files), anchor texts are one
sentence under the seed's splitter (re.split(r'[.!?]+')) with 5-40 words,
nothing copies the seed's classifier examples or the generator's
subject+twist phrases. Prints counts and the suggested split. Exit 1 on any
problem."""
import collections
import difflib
import itertools
import json
import os
import re
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFIG = os.path.join(ROOT, "config/ideaflow.toml")
VOCAB = os.path.join(ROOT, "sources/src/generator/vocabulary.rs")
FIXTURE_PY = os.path.join(ROOT, "tests/fixtures/make_classify_reference.py")

ANCHOR_LABELS = {"Hunch", "Wisdom", "Nudge", "Spell"}
MIN_ANCHOR, MIN_CATEGORY = 60, 45
problems = []


def load(name, required):
    rows = []
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{name}:{i}: not JSON ({e})")
                continue
            missing = required - r.keys()
            if missing:
                problems.append(f"{name}:{i}: missing {sorted(missing)}")
            if not isinstance(r.get("text"), str) or not r["text"].strip():
                problems.append(f"{name}:{i}: empty text")
            r["_line"] = i
            rows.append(r)
    return rows


def norm(t):
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s%]", " ", t.lower())).strip()


def tokens(t):
    return set(norm(t).split())


anchors = load("anchor_examples.jsonl", {"text", "label", "register", "hard"})
cats = load("category_examples.jsonl", {"text", "category", "hard"})
with open(CONFIG, "rb") as f:
    cfg = tomllib.load(f)
CATS = list(cfg["categories"].keys())
if {a["name"] for a in cfg["classifier"]["anchors"]} != ANCHOR_LABELS:
    problems.append("config anchors differ from Hunch/Wisdom/Nudge/Spell")

# labels and counts
ac = collections.Counter(r["label"] for r in anchors)
for r in anchors:
    if r["label"] not in ANCHOR_LABELS:
        problems.append(f"anchor line {r['_line']}: bad label {r['label']}")
    if r["register"] not in ("memo", "trend"):
        problems.append(f"anchor line {r['_line']}: bad register {r['register']}")
for lab in ANCHOR_LABELS:
    if ac[lab] < MIN_ANCHOR:
        problems.append(f"anchor {lab}: {ac[lab]} < {MIN_ANCHOR}")
if len(set(ac.values())) != 1:
    problems.append(f"anchor classes unbalanced: {dict(ac)}")
cc = collections.Counter(r["category"] for r in cats)
for r in cats:
    if r["category"] not in CATS:
        problems.append(f"category line {r['_line']}: unknown category {r['category']}")
for c in CATS:
    if cc[c] < MIN_CATEGORY:
        problems.append(f"category {c}: {cc[c]} < {MIN_CATEGORY}")

# anchor sentence shape: one piece under the seed splitter, >= 10 chars, 5-40 words
for r in anchors:
    pieces = [s.strip() for s in re.split(r"[.!?]+", r["text"]) if s.strip()]
    if len(pieces) != 1:
        problems.append(f"anchor line {r['_line']}: splits into {len(pieces)} sentences: {pieces}")
    if len(r["text"].strip()) < 10:
        problems.append(f"anchor line {r['_line']}: shorter than 10 chars")
    n = len(r["text"].split())
    if not 5 <= n <= 40:
        problems.append(f"anchor line {r['_line']}: {n} words")

# duplicates: exact normalized, then near (token Jaccard >= 0.6 or char ratio >= 0.85)
everything = [("anchor", r) for r in anchors] + [("category", r) for r in cats]
seen = {}
for kind, r in everything:
    k = norm(r["text"])
    if k in seen:
        problems.append(f"duplicate: {kind}:{r['_line']} == {seen[k]}")
    seen[k] = f"{kind}:{r['_line']}"
near = []
toks = [(kind, r, tokens(r["text"]), norm(r["text"])) for kind, r in everything]
for (k1, r1, t1, n1), (k2, r2, t2, n2) in itertools.combinations(toks, 2):
    jac = len(t1 & t2) / max(1, len(t1 | t2))
    sm = difflib.SequenceMatcher(None, n1, n2)
    ratio = sm.ratio() if sm.real_quick_ratio() >= 0.85 and sm.quick_ratio() >= 0.85 else 0.0
    if jac >= 0.6 or ratio >= 0.85:
        near.append((round(max(jac, ratio), 2), f"{k1}:{r1['_line']}", r1["text"], f"{k2}:{r2['_line']}", r2["text"]))
for n in near:
    problems.append(f"near-duplicate {n}")

# highest-similarity pairs, for the eye (not a failure)
top = []
for (k1, r1, t1, n1), (k2, r2, t2, n2) in itertools.combinations(toks, 2):
    top.append((len(t1 & t2) / max(1, len(t1 | t2)), r1["text"], r2["text"]))
top.sort(reverse=True)

# not copied from the seed's examples or the generator's phrases
seed_sents = []
src = open(FIXTURE_PY, encoding="utf-8").read()
for lit in re.findall(r'"""(.*?)"""|"((?:[^"\\]|\\.)*)"', src, re.S):
    text = lit[0] or lit[1]
    seed_sents += [s.strip() for s in re.split(r"[.!?]+", text) if len(s.strip()) >= 10]
seed_sents = [norm(s) for s in seed_sents if "Keywords" not in s and len(s.split()) >= 4]
for kind, r in everything:
    n1 = norm(r["text"])
    for s in seed_sents:
        if difflib.SequenceMatcher(None, n1, s).ratio() >= 0.75:
            problems.append(f"too close to seed sentence: {kind}:{r['_line']} {r['text']!r} ~ {s!r}")
vocab = open(VOCAB, encoding="utf-8").read()
blocks = re.findall(r"subjects: &\[(.*?)\],\s*twists: &\[(.*?)\]", vocab, re.S)
combos = []
for subj, tw in blocks:
    for s in re.findall(r'"([^"]+)"', subj):
        for t in re.findall(r'"([^"]+)"', tw):
            combos.append(norm(f"{s} {t}"))
for kind, r in everything:
    n1 = norm(r["text"])
    for c in combos:
        if c in n1:
            problems.append(f"generator phrase copied: {kind}:{r['_line']} contains {c!r}")

# report
print("anchor_examples.jsonl:", len(anchors), "lines")
for lab in ["Hunch", "Wisdom", "Nudge", "Spell"]:
    rs = [r for r in anchors if r["label"] == lab]
    reg = collections.Counter(r["register"] for r in rs)
    print(f"  {lab:7s} {len(rs):3d}  memo {reg['memo']:2d} trend {reg['trend']:2d}  hard {sum(r['hard'] for r in rs)}")
wc = [len(r["text"].split()) for r in anchors]
print(f"  words per sentence: min {min(wc)} max {max(wc)} mean {sum(wc)/len(wc):.1f}")
print("category_examples.jsonl:", len(cats), "lines")
for c in CATS:
    rs = [r for r in cats if r["category"] == c]
    print(f"  {c:10s} {len(rs):3d}  hard {sum(r['hard'] for r in rs)}")

# suggested split: 1-based line numbers divisible by 4 are held out
for name, rows, key in (("anchor", anchors, "label"), ("category", cats, "category")):
    test = collections.Counter(r[key] for r in rows if r["_line"] % 4 == 0)
    print(f"held out ({name}, every 4th line):", dict(test), "total", sum(test.values()))
    if name == "anchor":
        reg = collections.Counter((r["label"], r["register"]) for r in rows if r["_line"] % 4 == 0)
        print("  by register:", dict(reg))
    hard = sum(r["hard"] for r in rows if r["_line"] % 4 == 0)
    print(f"  hard cases held out: {hard} of {sum(r['hard'] for r in rows)}")

print("most similar pairs (token Jaccard):")
for j, a, b in top[:5]:
    print(f"  {j:.2f}  {a!r}  ~  {b!r}")

if problems:
    print(f"\n{len(problems)} PROBLEM(S):")
    for p in problems:
        print("  " + p)
    sys.exit(1)
print("\nOK: all checks passed")
