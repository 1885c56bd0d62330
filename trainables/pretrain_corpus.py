"""The pretraining corpus of the tiny stand-ins: captions and instruction-style VQA, in memory.

Why: the real InstructBLIP reaches ScienceQA / IconQA already knowing how to see and to answer:
BLIP-2 aligned its Q-Former to the frozen ViT and taught the LLM to read the projected queries
(image-text alignment, captioning), and instruction tuning on many held-in VQA datasets taught it
to follow instructions about an image. The tiny stand-ins get the same history in their own
synthetic world (trainables.data.synth: shapes, colours, counts, positions), so that the
downstream fine-tuning adapts a model that knows something, like the paper's does.

Disjoint from the downstream synth benchmarks, so zero-shot accuracy means transfer:
- images come from their own seed (a string seed; synth seeds integers) and any image whose PNG
  bytes equal an image of any split of either downstream benchmark is drawn again;
- questions use their own phrasings, and answers are short sentences ("It is red.",
  "There are 3."): there is no "Options:" list, no letter label and no "Answer:" cue, so the
  lettered multiple choice of the downstream tasks is new and must be learnt by fine-tuning.
Objectives: ``caption`` (describe the scene: the alignment / generative pretraining of BLIP-2)
and ``vqa`` (an instruction about the image, some with a rule or a comparison in the text, the
analogue of InstructBLIP's instruction-tuning mixture). The same seed gives the same corpus,
byte for byte (``corpus_hash``).

Figure-panel captions: half of the captions caption the image as panel x of a figure, the
letter named by the prompt and copied into the target: ``(c) green circle.``. Why: a real LLM
can write and read ``(b)``-style labels long before it meets a multiple-choice question; a tiny
LLM pretrained only on sentences cannot (measured on tiny-t5 without them: its decoder gives
every ``(``/letter token a log-probability near -15 and resets to "start of answer" after
them, and the rows that keep the LLM frozen - baseline, qformer_lora - stay at chance on both
synth benchmarks at any learning rate; with them, 74-77% test accuracy). The letter is a name
given in the prompt, never chosen among options, so there is still no multiple choice here.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from trainables.data.examples import Example
from trainables.data.images import decode_image
from trainables.data.synth import COLOURS, SHAPES, generate, render_png

OBJECTIVES: tuple[str, ...] = ("caption", "vqa")
CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe the image.", "What is in the picture?", "Write a caption for the image.",
    "Give a short description of the picture.",
)
VQA_WRAPPERS: tuple[str, ...] = (
    "{q}", "{q} Reply with a short sentence.", "Look at the picture. {q}", "About the image: {q}",
)
PANEL_SHARE = 0.5
"""Share of captions written as a figure-panel caption, ``(c) green circle.``, for a panel
letter the prompt names (see the module docstring)."""
PANEL_LETTERS = "abcde"
LAYOUTS: dict[str, int] = {"single": 2, "count": 1, "pair": 1}
"""Scene layouts of the synthetic world and their weights (the downstream tasks use all three)."""
_COUNT_CELLS = ((16, 16), (48, 16), (16, 48), (48, 48))


@dataclass(frozen=True)
class Scene:
    """One drawn image and the facts a caption or an answer may state about it."""

    layout: str
    shape: str
    colours: tuple[str, ...]
    """single/count: (colour,); pair: (top colour, bottom colour)."""
    count: int
    png: bytes


@dataclass(frozen=True)
class CorpusItem:
    """One training text about one image."""

    objective: str
    prompt: str
    target: str
    png: bytes

    def example(self, pid: str, image_size: int) -> Example:
        """As a one-candidate Example, so batching lays it out exactly like a downstream problem."""
        return Example(pid=pid, image=decode_image(self.png, image_size), prompt=self.prompt,
                       qformer_text=self.prompt, candidates=(self.target,), answer_index=0)


def _draw_scene(rng: random.Random) -> Scene:
    """A scene in the downstream benchmarks' layouts and parameter ranges (synth.make_problem)."""
    layout = rng.choices(list(LAYOUTS), weights=list(LAYOUTS.values()))[0]
    shape = rng.choice(SHAPES)
    if layout == "single":
        colour = rng.choice(list(COLOURS))
        objects = [(shape, colour, rng.randint(29, 35), rng.randint(29, 35), rng.randint(22, 27))]
        return Scene(layout, shape, (colour,), 1, render_png(objects))
    if layout == "count":
        n, colour = rng.randint(1, 4), rng.choice(list(COLOURS))
        cells = rng.sample(_COUNT_CELLS, n)
        objects = [(shape, colour, x + rng.randint(-2, 2), y + rng.randint(-2, 2), 10) for x, y in cells]
        return Scene(layout, shape, (colour,), n, render_png(objects))
    top, bottom = rng.sample(list(COLOURS), 2)
    x = rng.randint(22, 42)
    objects = [(shape, top, x, rng.randint(14, 18), 13), (shape, bottom, x, rng.randint(46, 50), 13)]
    return Scene(layout, shape, (top, bottom), 2, render_png(objects))


def _either(rng: random.Random, answer: str, pool: list[str], k: int) -> str:
    """``"x, y or z"``: the answer and k-1 distractors in random order (no labels)."""
    opts = [answer] + rng.sample([p for p in pool if p != answer], k - 1)
    rng.shuffle(opts)
    return ", ".join(opts[:-1]) + " or " + opts[-1]


def _yes_no(truth: bool) -> str:
    return "The answer is yes." if truth else "The answer is no."


def _description(s: Scene) -> str:
    if s.layout == "single":
        return f"{s.colours[0]} {s.shape}"
    if s.layout == "count":
        return f"{s.count} {s.colours[0]} {s.shape}" + ("s" if s.count > 1 else "")
    return f"{s.colours[0]} {s.shape} above {s.colours[1]} {s.shape}"


def _caption(rng: random.Random, s: Scene) -> tuple[str, str]:
    if rng.random() < PANEL_SHARE:
        letter = rng.choice(PANEL_LETTERS)
        prompt = rng.choice((f"This picture is panel {letter} of a figure. Write its caption.",
                             f"Caption panel {letter} of the figure."))
        return prompt, f"({letter}) {_description(s)}."
    if s.layout == "single":
        text = f"A {s.colours[0]} {s.shape}."
    elif s.layout == "count":
        text = f"There is 1 {s.colours[0]} {s.shape}." if s.count == 1 else \
            f"There are {s.count} {s.colours[0]} {s.shape}s."
    else:
        text = f"A {s.colours[0]} {s.shape} above a {s.colours[1]} {s.shape}."
    return rng.choice(CAPTION_PROMPTS), text


def _single_vqa(rng: random.Random, s: Scene) -> tuple[str, str]:
    colour, colours = s.colours[0], list(COLOURS)
    kind = rng.choice(("colour", "colour", "shape", "colour_or", "shape_or", "verify", "rule"))
    if kind == "colour":
        q = rng.choice(("Which color is the object?", "What color is the shape in the picture?",
                        "Tell me the color of the shape."))
        return q, f"It is {colour}."
    if kind == "shape":
        return rng.choice(("What kind of shape is this?", "Name the shape in the picture.")), f"It is a {s.shape}."
    if kind == "colour_or":
        return f"Is the shape {_either(rng, colour, colours, rng.randint(2, 3))}?", f"It is {colour}."
    if kind == "shape_or":
        shapes = [f"a {x}" for x in SHAPES]
        return f"Is it {_either(rng, f'a {s.shape}', shapes, 2)}?", f"It is a {s.shape}."
    other = rng.choice([c for c in colours if c != colour])
    if kind == "verify":
        asked = rng.choice((colour, other))
        return f"Is the shape {asked}?", _yes_no(asked == colour)
    yes, no = (colour, other) if rng.random() < 0.5 else (other, colour)
    return (f"If the shape is {yes}, say yes. If it is {no}, say no. What do you say?",
            _yes_no(yes == colour))


def _count_vqa(rng: random.Random, s: Scene) -> tuple[str, str]:
    n, colour = s.count, s.colours[0]
    kind = rng.choice(("count", "count", "count_or", "verify", "colour"))
    there = "There is 1." if n == 1 else f"There are {n}."
    if kind == "count":
        return rng.choice(("How many objects can you see?", "Count the shapes in the picture.")), there
    if kind == "count_or":
        return f"Are there {_either(rng, str(n), ['1', '2', '3', '4'], 2)} shapes?", there
    if kind == "verify":
        asked = rng.choice((n, rng.choice([k for k in range(1, 5) if k != n])))
        return f"Are there {asked} shapes in the picture?", _yes_no(asked == n)
    return "Which color are the shapes?", (f"It is {colour}." if n == 1 else f"They are {colour}.")


def _pair_vqa(rng: random.Random, s: Scene) -> tuple[str, str]:
    top, bottom = s.colours
    kind = rng.choice(("which", "where", "where", "heavier", "verify"))
    if kind == "which":
        at_top = rng.random() < 0.5
        q = "Which color is the upper shape?" if at_top else "Which color is the lower shape?"
        return q, f"It is {top if at_top else bottom}."
    asked = rng.choice((top, bottom))
    place = "top" if asked == top else "bottom"
    if kind == "where":
        return f"Where is the {asked} shape?", f"It is at the {place}."
    if kind == "verify":
        return f"Is the {asked} shape at the top?", _yes_no(place == "top")
    other = bottom if asked == top else top
    return (f"The {asked} shape weighs more than the {other} shape. Where is the heavier shape?",
            f"It is at the {place}.")


_VQA: dict[str, Callable[[random.Random, Scene], tuple[str, str]]] = {
    "single": _single_vqa, "count": _count_vqa, "pair": _pair_vqa,
}


def downstream_image_hashes(seed: int, sizes: dict[str, int]) -> frozenset[str]:
    """SHA-256 of every image of both synth benchmarks (all splits), to keep the corpus disjoint."""
    return frozenset(hashlib.sha256(p["image"]).hexdigest()
                     for kind in ("scienceqa", "iconqa") for _, _, p in generate(kind, seed, sizes))


def make_corpus(seed: int, size: int, caption_share: float, exclude: frozenset[str]) -> list[CorpusItem]:
    """``size`` items, deterministic in (seed, size, caption_share, exclude)."""
    if size < 1:
        raise ValueError(f"corpus size must be >= 1, got {size}")
    if not 0.0 <= caption_share <= 1.0:
        raise ValueError(f"caption_share must be in [0, 1], got {caption_share}")
    rng = random.Random(f"pretrain-corpus-{seed}")
    items: list[CorpusItem] = []
    while len(items) < size:
        scene = _draw_scene(rng)
        if hashlib.sha256(scene.png).hexdigest() in exclude:
            continue
        if rng.random() < caption_share:
            prompt, target = _caption(rng, scene)
            items.append(CorpusItem("caption", prompt, target, scene.png))
        else:
            question, target = _VQA[scene.layout](rng, scene)
            items.append(CorpusItem("vqa", rng.choice(VQA_WRAPPERS).format(q=question), target, scene.png))
    return items


def corpus_hash(items: list[CorpusItem]) -> str:
    """SHA-256 over every item's objective, texts and image bytes, in order."""
    h = hashlib.sha256()
    for it in items:
        for part in (it.objective, it.prompt, it.target):
            h.update(part.encode("utf-8") + b"\0")
        h.update(hashlib.sha256(it.png).digest())
    return h.hexdigest()
