"""Scores of a user study (``stylex_port.analyses.user_study``) from the participants' CSV files.

- Classification: per participant, the fraction of questions answered with the right panel,
  per attribute (the attribute the new animation showed) and overall; reported as the mean over
  participants, their standard deviation (the paper's "+-") and a bootstrap interval that
  resamples participants. Chance is 0.5.
- Verbal description: the most common words per attribute (lower case, letters only, without
  a few function words).

A response file is refused, with one line naming the file and the row, when its header, study
id, participant, question ids or answers are not what the study's page writes, when it repeats
a question or misses one, and when it repeats another file (same participant or same content).
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np

from attfind.errors import AttFindInputError
from models_pt import file_sha256
from stylex_port.analyses.fliprate import bootstrap_ci
from stylex_port.analyses.user_study import CSV_HEADER, SIDES, STUDY_FORMAT

STOP_WORDS = frozenset("a an and the of in on to is it its with or more less very face".split())
TOP_WORDS = 3


class ResponseError(AttFindInputError):
    """A response file the score refuses; the message names the file and the row."""


def read_key(study_dir: Path) -> dict:
    from stylex_port.analyses.files import read_json

    path = Path(study_dir) / "key.json"
    key = read_json(path, "--study is the --out folder of `cli.py user-study`", "the JSON `cli.py user-study` writes")
    if not isinstance(key, dict) or key.get("format") != STUDY_FORMAT:
        got = key.get("format") if isinstance(key, dict) else type(key).__name__
        raise AttFindInputError(f"{path}: format {got!r}, expected {STUDY_FORMAT!r}")
    return key


def read_responses(path: Path, key: dict) -> tuple[str, dict[str, str]]:
    """``(participant, {question id: answer})`` of one file, checked against the key."""
    path = Path(path)
    questions = {q["id"]: q for q in key["questions"]}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:      # -sig: a file re-saved with a BOM
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ResponseError(f"{path}: cannot be read as a CSV file ({e})") from None
    if not rows or tuple(rows[0]) != CSV_HEADER:
        raise ResponseError(f"{path} row 1: header {rows[0] if rows else 'missing'}, expected {','.join(CSV_HEADER)}")
    participant, answers = None, {}
    for i, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != len(CSV_HEADER):
            raise ResponseError(f"{path} row {i}: {len(row)} fields, expected {len(CSV_HEADER)}")
        study_id, who, qid, kind, answer = row
        if study_id != key["study_id"]:
            raise ResponseError(f"{path} row {i}: study {study_id!r}, these answers are not for study "
                                f"{key['study_id']!r}")
        if not who.strip():
            raise ResponseError(f"{path} row {i}: no participant ID")
        if participant is None:
            participant = who
        elif who != participant:
            raise ResponseError(f"{path} row {i}: participant {who!r}, the file began with {participant!r}")
        if qid not in questions or questions[qid]["kind"] != kind:
            raise ResponseError(f"{path} row {i}: question {qid!r} ({kind}) is not in the study")
        if qid in answers:
            raise ResponseError(f"{path} row {i}: question {qid} answered twice")
        if kind == "classification" and answer not in SIDES:
            raise ResponseError(f"{path} row {i}: answer {answer!r} to {qid}, expected left or right")
        if kind == "verbal" and not answer.strip():
            raise ResponseError(f"{path} row {i}: an empty description for {qid} (the page asks for a word)")
        answers[qid] = answer
    missing = [q for q in questions if q not in answers]
    if missing:
        raise ResponseError(f"{path}: {len(missing)} of {len(questions)} questions unanswered"
                            + (f" (the first: {missing[0]})" if missing else ""))
    return participant, answers


def read_all(paths: list[Path], key: dict) -> dict[str, dict[str, str]]:
    """Every file's answers by participant; a repeated participant or file content is refused."""
    seen_who, seen_hash, out = {}, {}, {}
    for p in paths:
        digest = file_sha256(p) if Path(p).is_file() else None
        if digest in seen_hash:
            raise ResponseError(f"{p}: the same file as {seen_hash[digest]}")
        who, answers = read_responses(p, key)
        if who in seen_who:
            raise ResponseError(f"{p} row 2: participant {who!r} already answered in {seen_who[who]}")
        seen_who[who], seen_hash[digest] = p, p
        out[who] = answers
    return out


def words_of(text: str) -> list[str]:
    """Lower-case words of letters (any alphabet: "Glässer" -> "glässer"), function words dropped."""
    return [w for w in re.findall(r"[^\W\d_]+", text.casefold()) if w not in STOP_WORDS]


def summary(per_participant: list[float], resamples: int, seed: int) -> dict:
    v = np.asarray(per_participant, np.float64)
    return {"accuracy": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "ci": list(bootstrap_ci(v, resamples, np.random.default_rng(seed))), "participants": int(len(v))}


def score(study_dir: Path, response_files: list[Path], resamples: int = 1000, seed: int = 0) -> dict:
    """The document ``user-study-score`` writes as ``score.json``."""
    if resamples < 1:
        raise AttFindInputError(f"--bootstrap {resamples}: expected at least 1 resample")
    key = read_key(study_dir)
    if not response_files:
        raise AttFindInputError("--responses: no files given")
    responses = read_all(response_files, key)
    cls = [q for q in key["questions"] if q["kind"] == "classification"]
    verbal = [q for q in key["questions"] if q["kind"] == "verbal"]
    ranks = [a["rank"] for a in key["attributes"]]
    per_attr = {r: [] for r in ranks}
    overall, participants = [], {}
    for who, answers in responses.items():
        right = {q["id"]: answers[q["id"]] == q["correct"] for q in cls}
        participants[who] = {"accuracy": float(np.mean(list(right.values()))), "correct": int(sum(right.values())),
                             "questions": len(right)}
        overall.append(participants[who]["accuracy"])
        for r in ranks:
            mine = [right[q["id"]] for q in cls if q["attribute"] == r]
            if mine:
                per_attr[r].append(float(np.mean(mine)))
    words = {r: Counter() for r in ranks}
    for answers in responses.values():
        for q in verbal:
            words[q["attribute"]].update(words_of(answers[q["id"]]))
    attrs = []
    for a in key["attributes"]:
        r = a["rank"]
        row = {"rank": r, "coordinate": a["coordinate"], "direction": a["direction"],
               "top_words": [[w, n] for w, n in words[r].most_common(TOP_WORDS)]}
        if per_attr[r]:
            row.update(summary(per_attr[r], resamples, seed))
        attrs.append(row)
    return {"study_id": key["study_id"], "files": [str(p) for p in response_files], "chance": 0.5,
            "overall": summary(overall, resamples, seed), "attributes": attrs, "participants": participants,
            "bootstrap": resamples}


def format_score_table(doc: dict) -> str:
    lines = ["| attribute | coordinate | accuracy | +- std | 95% CI | top words |", "| --- | --- | --- | --- | --- | --- |"]
    for a in doc["attributes"]:
        words = ", ".join(f"{w} ({n})" for w, n in a["top_words"]) or "-"
        if "accuracy" in a:
            lines.append(f"| #{a['rank']} | {a['coordinate']} | {a['accuracy']:.3f} | {a['std']:.3f} | "
                         f"[{a['ci'][0]:.3f}, {a['ci'][1]:.3f}] | {words} |")
        else:
            lines.append(f"| #{a['rank']} | {a['coordinate']} | - | - | - | {words} |")
    o = doc["overall"]
    lines.append(f"| all | | {o['accuracy']:.3f} | {o['std']:.3f} | [{o['ci'][0]:.3f}, {o['ci'][1]:.3f}] | |")
    return "\n".join(lines) + f"\n\n{o['participants']} participants; chance is {doc['chance']}\n"


def plot(doc: dict, path: Path) -> Path:
    """Accuracy per attribute and overall, with the bootstrap intervals and the chance line."""
    from stylex_port.analyses.files import figure, save_figure

    rows = [a for a in doc["attributes"] if "accuracy" in a] + [dict(doc["overall"], rank="all")]
    labels = [f"#{r['rank']}" if r["rank"] != "all" else "all" for r in rows]
    acc = np.array([r["accuracy"] for r in rows])
    err = np.array([[r["accuracy"] - r["ci"][0], r["ci"][1] - r["accuracy"]] for r in rows]).T
    fig, ax = figure((6, 3.5))
    ax.bar(labels, acc, yerr=err, capsize=4, color=["C0"] * (len(rows) - 1) + ["C1"])
    ax.axhline(doc["chance"], color="grey", ls="--", lw=1, label="chance")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("classification accuracy")
    ax.set_title(f"{doc['overall']['participants']} participants; bars: 95% bootstrap CI")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_score(doc: dict, out_dir: Path) -> list[Path]:
    from porting.atomic import atomic_path, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "score.json", doc)
    with atomic_path(out_dir / "score.md") as tmp:
        tmp.write_text(format_score_table(doc))
    return [out_dir / "score.json", out_dir / "score.md", plot(doc, out_dir / "score.png")]
