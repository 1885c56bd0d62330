"""Embedded synthetic benchmarks, generated deterministically and written in the official layouts.

synth-iconqa: one image per problem (64x64 PNG, big solid shapes on white) and a question whose
answer is read off the image: colour of the shape, kind of shape, number of shapes (1-4), or
whether a given colour is at the top or the bottom (not left/right: training flips images
horizontally, as the authors did, which would flip such answers). synth-scienceqa asks the
same, with a hint and sometimes a lecture (so absent fields occur), plus two question types
that need the context AND the image: a colour code given in the hint ("a red shape means yes
...") and a comparison given in the hint ("The red object is heavier ...") asking where the
heavier one is.

Options: 2-5 per question. Colour, shape and count options are listed in a fixed vocabulary
order (a subset of red, green, blue, yellow, purple, ...), so a colour tends to keep its letter,
which a tiny model picks up sooner; the answer's position is still uniform over the options,
so guessing by position stays at chance. The chance level (mean 1/len(choices)) is written to
the manifest. Colour questions are the most frequent and the easiest; count the hardest.
The same seed and sizes give byte-identical files.
"""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

IMAGE_SIDE = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (20, 160, 40), "blue": (30, 70, 230),
    "yellow": (240, 200, 0), "purple": (140, 40, 180),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Question types and their weights: colour, the easiest for a tiny model, is the most common.
IMAGE_TYPES: dict[str, int] = {"color": 6, "shape": 2, "count": 1, "position": 1}
CONTEXT_TYPES: dict[str, int] = {"rule": 2, "heavier": 1}
LECTURES: dict[str, str] = {
    "color": "Objects have colors. Red, green, blue, yellow and purple are colors.",
    "shape": "A circle is round. A square has four equal sides. A triangle has three sides.",
    "count": "To count objects, point to each one once and say the next number.",
    "position": "The top of a picture is its upper part. The bottom is its lower part.",
}


def _draw(d: ImageDraw.ImageDraw, shape: str, colour: str, cx: int, cy: int, r: int) -> None:
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def render_png(objects: list[tuple[str, str, int, int, int]]) -> bytes:
    """PNG bytes of (shape, colour, cx, cy, r) objects on white; also drawn by the pretraining corpus."""
    im = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (255, 255, 255))
    d = ImageDraw.Draw(im)
    for obj in objects:
        _draw(d, *obj)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _options(rng: random.Random, answer: str, pool: list[str], k: int,
             keep_order: bool = False) -> tuple[list[str], int]:
    """k options including the answer, drawn from pool, shuffled (or in pool order)."""
    others = rng.sample([p for p in pool if p != answer], k - 1)
    opts = [answer] + others
    if keep_order:
        opts.sort(key=pool.index)
    else:
        rng.shuffle(opts)
    return opts, opts.index(answer)


def _pair(rng: random.Random) -> tuple[list[tuple], str, str]:
    """Two shapes of different colours, one above the other; returns objects, top and bottom colour."""
    top, bottom = rng.sample(list(COLOURS), 2)
    shape = rng.choice(SHAPES)
    x = rng.randint(22, 42)
    return [(shape, top, x, rng.randint(14, 18), 13), (shape, bottom, x, rng.randint(46, 50), 13)], top, bottom


def make_problem(rng: random.Random, qtype: str) -> dict:
    """One problem: question, choices, answer index, hint, lecture and the PNG bytes."""
    hint = ""
    colours = list(COLOURS)
    if qtype in ("color", "shape", "rule"):
        shape, colour = rng.choice(SHAPES), rng.choice(colours)
        objects = [(shape, colour, rng.randint(29, 35), rng.randint(29, 35), rng.randint(22, 27))]
        if qtype == "color":
            question = "What color is the shape?"
            choices, answer = _options(rng, colour, colours, rng.randint(2, 5), keep_order=True)
        elif qtype == "shape":
            question = "Which shape is shown?"
            choices, answer = _options(rng, shape, list(SHAPES), rng.randint(2, 3), keep_order=True)
        else:
            other = rng.choice([c for c in colours if c != colour])
            yes, no = (colour, other) if rng.random() < 0.5 else (other, colour)
            hint = f"In this puzzle, a {yes} shape means yes and a {no} shape means no."
            question = "What does the shape in the picture mean?"
            choices, answer = _options(rng, "yes" if yes == colour else "no", ["yes", "no"], 2)
    elif qtype == "count":
        n, shape, colour = rng.randint(1, 4), rng.choice(SHAPES), rng.choice(colours)
        cells = rng.sample([(16, 16), (48, 16), (16, 48), (48, 48)], n)
        objects = [(shape, colour, x + rng.randint(-2, 2), y + rng.randint(-2, 2), 10) for x, y in cells]
        question = "How many shapes are there?"
        choices, answer = _options(rng, str(n), ["1", "2", "3", "4"], rng.randint(2, 4), keep_order=True)
    else:  # position, heavier
        objects, top, bottom = _pair(rng)
        if qtype == "position":
            asked = rng.choice([top, bottom])
            question = f"Is the {asked} shape at the top or at the bottom?"
            truth = "top" if asked == top else "bottom"
        else:
            heavy, light = (top, bottom) if rng.random() < 0.5 else (bottom, top)
            hint = f"The {heavy} object is heavier than the {light} object."
            question = "Is the heavier object at the top or at the bottom?"
            truth = "top" if heavy == top else "bottom"
        choices, answer = _options(rng, truth, ["top", "bottom"], 2, keep_order=True)
    return {"qtype": qtype, "question": question, "choices": choices, "answer": answer,
            "hint": hint, "image": render_png(objects)}


def generate(kind: str, seed: int, sizes: dict[str, int]) -> list[tuple[str, str, dict]]:
    """(pid, split, problem) for every problem, deterministic in (kind, seed, sizes)."""
    if kind not in ("scienceqa", "iconqa"):
        raise ValueError(f"unknown synthetic kind {kind!r}; allowed: scienceqa, iconqa")
    rng = random.Random(seed * 2 + (kind == "iconqa"))
    weights = {**IMAGE_TYPES, **(CONTEXT_TYPES if kind == "scienceqa" else {})}
    types, w = list(weights), list(weights.values())
    out, pid = [], 0
    for split in ("train", "val", "test"):
        for _ in range(sizes.get(split, 0)):
            pid += 1
            prob = make_problem(rng, rng.choices(types, weights=w)[0])
            prob["lecture"] = ""
            if kind == "scienceqa":
                if not prob["hint"] and rng.random() < 0.5:
                    prob["hint"] = "Look at the picture."
                if prob["qtype"] in LECTURES and rng.random() < 0.3:
                    prob["lecture"] = LECTURES[prob["qtype"]]
            out.append((str(pid), split, prob))
    return out


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_scienceqa_layout(problems: list[tuple[str, str, dict]], root: Path) -> None:
    """problems.json, pid_splits.json, images/<split>/<pid>/image.png (the official layout)."""
    index, splits = {}, {"train": [], "val": [], "test": []}
    for pid, split, p in problems:
        index[pid] = {"question": p["question"], "choices": p["choices"], "answer": p["answer"],
                      "hint": p["hint"], "image": "image.png", "task": "closed choice",
                      "grade": "synthetic", "subject": "synthetic", "topic": p["qtype"],
                      "category": p["qtype"], "skill": p["qtype"], "lecture": p["lecture"],
                      "solution": "", "split": split}
        splits[split].append(pid)
        image = root / "images" / split / pid / "image.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(p["image"])
    _dump(root / "problems.json", index)
    _dump(root / "pid_splits.json", splits)


def write_iconqa_layout(problems: list[tuple[str, str, dict]], root: Path) -> None:
    """iconqa_data/{problems.json, pid_splits.json, iconqa/<split>/choose_txt/<pid>/{image.png,data.json}}."""
    data_root = root / "iconqa_data"
    index: dict[str, dict] = {}
    splits: dict[str, list[str]] = {k: [] for s in ("train", "val", "test") for k in (s, f"choose_txt_{s}")}
    for pid, split, p in problems:
        data = {"question": p["question"], "choices": p["choices"], "answer": p["answer"],
                "ques_type": "choose_txt", "grade": "synthetic", "label": p["qtype"]}
        folder = data_root / "iconqa" / split / "choose_txt" / pid
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "image.png").write_bytes(p["image"])
        _dump(folder / "data.json", data)
        index[pid] = {**data, "split": split}
        splits[split].append(pid)
        splits[f"choose_txt_{split}"].append(pid)
    _dump(data_root / "problems.json", index)
    _dump(data_root / "pid_splits.json", splits)


def write_synth(benchmark: str, root: str | Path, seed: int, sizes: dict[str, int]) -> Path:
    """Generate `synth-scienceqa` or `synth-iconqa` into root in its official layout."""
    kind = benchmark.removeprefix("synth-")
    root = Path(root)
    problems = generate(kind, seed, sizes)
    (write_scienceqa_layout if kind == "scienceqa" else write_iconqa_layout)(problems, root)
    return root
