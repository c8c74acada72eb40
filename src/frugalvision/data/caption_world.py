"""A procedural caption world: scenes of coloured shapes with sizes and spatial relations, captions from the graph.

Each scene holds 1-3 objects (shape, colour, size) on a 3 x 3 grid; relations (left of, right of, above, below)
follow from the grid cells. Captions are generated from the scene graph, so the ground truth is exact: which
concepts an image shows, which captions describe it. Images are small RGB arrays with a tinted, noisy background
and jittered colours and positions. Used by the vision-language methods (ViCHA) as an offline pre-training world.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "COLOURS",
    "UNOBSERVABLE",
    "entailment_hypothesis",
    "nlvr_statement",
    "referring_expression",
    "vqa_questions",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "CaptionWorld",
    "Scene",
    "SceneObject",
    "caption_world",
    "render_scene",
    "render_scene_with_boxes",
    "sample_scene",
    "scene_cell_labels",
    "scene_concepts",
    "vocabulary",
    "write_caption_world",
]

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring", "frame", "bar")
COLOURS = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.90, 0.15),
    "purple": (0.65, 0.20, 0.85),
    "cyan": (0.15, 0.85, 0.90),
    "orange": (0.98, 0.55, 0.10),
    "white": (0.95, 0.95, 0.95),
}
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
GRID = 3
#: words that describe what a picture cannot show (the "neutral" hypotheses of visual entailment)
UNOBSERVABLE = ("heavy", "wooden", "warm", "new")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")
#: the other words the caption and task generators emit
FUNCTION_WORDS = (
    "a an and there is the what colour shape object objects size how many are yes no in both images image left "
    "right contains contain total has more than one"
).split()


def vocabulary() -> list[str]:
    """Every word a generator of this module may write (captions and task texts), e.g. to size a tokenizer."""
    relations = (w for r in RELATIONS for w in r.split())
    words = [*SHAPES, *COLOURS, *SIZES, *relations, *UNOBSERVABLE, *NUMBERS, *FUNCTION_WORDS]
    return list(dict.fromkeys(words))


@dataclass(frozen=True)
class SceneObject:
    """One object: what it is and in which grid cell (row, col) it sits."""

    shape: str
    colour: str
    size: str
    row: int
    col: int

    def phrase(self, with_size: bool = True) -> str:
        """``a large red circle`` (``with_size=False``: ``a red circle``; ``an orange ring``)."""
        words = [self.size, self.colour, self.shape] if with_size else [self.colour, self.shape]
        return " ".join(["an" if words[0][0] in "aeiou" else "a", *words])


@dataclass(frozen=True)
class Scene:
    """A scene graph and the captions generated from it (the first one is the canonical, most complete caption).

    Attributes:
        objects: the objects.
        relations: ``(subject index, relation, object index)`` triples that hold in the scene.
        captions: captions describing the scene.
    """

    objects: tuple[SceneObject, ...]
    relations: tuple[tuple[int, str, int], ...]
    captions: tuple[str, ...]


def _relation(a: SceneObject, b: SceneObject, rng: np.random.Generator) -> str:
    options = []
    if a.col != b.col:
        options.append("left of" if a.col < b.col else "right of")
    if a.row != b.row:
        options.append("above" if a.row < b.row else "below")
    return options[int(rng.integers(len(options)))]


def _captions(objects: tuple[SceneObject, ...], relations: list[tuple[int, str, int]]) -> tuple[str, ...]:
    """Canonical caption (every object with size, chained by relations), then two paraphrases."""
    if len(objects) == 1:
        only = objects[0]
        return (only.phrase(), f"{only.phrase(with_size=False)}", f"there is {only.phrase()}")
    canonical = objects[0].phrase()
    for index in range(1, len(objects)):
        relation = next(r for s, r, o in relations if s == index - 1 and o == index)
        canonical += f" {relation} {objects[index].phrase()}"
    listing = " and ".join(o.phrase(with_size=False) for o in objects)
    reverse = objects[-1].phrase()
    for index in range(len(objects) - 2, -1, -1):
        relation = next(r for s, r, o in relations if s == index and o == index + 1)
        inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[relation]
        reverse += f" {inverse} {objects[index].phrase()}"
    return canonical, listing, reverse


def sample_scene(rng: np.random.Generator, max_objects: int = 3) -> Scene:
    """Draw a scene: 1..max_objects objects in distinct cells, a relation between each consecutive pair."""
    count = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(GRID * GRID, size=count, replace=False)
    colours = list(COLOURS)
    objects = tuple(
        SceneObject(
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            colour=colours[int(rng.integers(len(colours)))],
            size=SIZES[int(rng.integers(len(SIZES)))],
            row=int(cell) // GRID,
            col=int(cell) % GRID,
        )
        for cell in cells
    )
    relations = [(i, _relation(objects[i], objects[i + 1], rng), i + 1) for i in range(count - 1)]
    return Scene(objects, tuple(relations), _captions(objects, relations))


def _shape_mask(shape: str, half: int) -> np.ndarray:
    """Boolean mask of a shape in a (2 half + 1)^2 box."""
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    r = np.hypot(x, y)
    thick = max(1.0, half / 3)
    if shape == "circle":
        return r <= half + 0.3
    if shape == "ring":
        return (r <= half + 0.3) & (r >= half - thick)
    if shape == "square":
        return np.ones_like(r, dtype=bool)
    if shape == "frame":
        return (np.abs(x) >= half - thick + 0.5) | (np.abs(y) >= half - thick + 0.5)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= half + 0.3
    if shape == "cross":
        return (np.abs(x) <= thick / 2 + 0.3) | (np.abs(y) <= thick / 2 + 0.3)
    if shape == "triangle":
        return (y >= -half) & (np.abs(x) <= (y + half) / 2 + 0.5)
    if shape == "bar":
        return np.abs(y) <= thick / 2 + 0.6
    raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")


def render_scene(scene: Scene, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a scene as ``uint8 [H, W, 3]``: tinted noisy background, jittered colours and positions."""
    return render_scene_with_boxes(scene, image_size, rng)[0]


def render_scene_with_boxes(
    scene: Scene, image_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[tuple[int, int, int, int], ...]]:
    """:func:`render_scene` plus each object's exact box ``(x, y, w, h)`` (COCO order, the painted pixels' extent)."""
    cell = image_size / GRID
    background = 0.12 + 0.10 * rng.random(3)
    image = np.broadcast_to(background, (image_size, image_size, 3)).copy()
    boxes = []
    for obj in scene.objects:
        half = int(round(cell * (0.42 if obj.size == "large" else 0.24)))
        mask = _shape_mask(obj.shape, half)
        jitter = rng.integers(-1, 2, size=2)
        cy = int(round((obj.row + 0.5) * cell)) + int(jitter[0])
        cx = int(round((obj.col + 0.5) * cell)) + int(jitter[1])
        colour = np.clip(np.asarray(COLOURS[obj.colour]) + rng.normal(0, 0.05, 3), 0, 1)
        y0, x0 = cy - half, cx - half
        ys, xs = np.nonzero(mask)
        ys, xs = ys + y0, xs + x0
        keep = (ys >= 0) & (ys < image_size) & (xs >= 0) & (xs < image_size)
        image[ys[keep], xs[keep]] = colour
        ys, xs = ys[keep], xs[keep]
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)))
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), tuple(boxes)


def scene_cell_labels(scene: Scene) -> np.ndarray:
    """Per grid cell (row-major) the class of its shape, colour and size: ``int64 [GRID * GRID, 3]``, 0 = empty.

    Shape ``i`` of :data:`SHAPES` is ``i + 1``, likewise colours (order of :data:`COLOURS`) and sizes.
    """
    labels = np.zeros((GRID * GRID, 3), dtype=np.int64)
    colours = list(COLOURS)
    for obj in scene.objects:
        labels[obj.row * GRID + obj.col] = (
            SHAPES.index(obj.shape) + 1,
            colours.index(obj.colour) + 1,
            SIZES.index(obj.size) + 1,
        )
    return labels


def scene_concepts(scene: Scene) -> set[str]:
    """The exact concepts an image shows: its shapes, colours and sizes."""
    return {word for o in scene.objects for word in (o.shape, o.colour, o.size)}


@dataclass(frozen=True)
class CaptionWorld:
    """Images and their scene graphs.

    Attributes:
        images: ``uint8 [N, H, W, 3]``.
        scenes: one scene per image.
        boxes: per image, the ``(x, y, w, h)`` box of each object (in the scene's object order).
    """

    images: np.ndarray
    scenes: tuple[Scene, ...]
    boxes: tuple[tuple[tuple[int, int, int, int], ...], ...] = ()

    def __len__(self) -> int:
        return len(self.scenes)


def caption_world(
    n: int, seed: int, image_size: int = 32, max_objects: int = 3, unique_captions: bool = False
) -> CaptionWorld:
    """Generate ``n`` scenes and images, deterministically from ``seed``.

    Args:
        n: number of images.
        seed: random seed (same seed, same world).
        image_size: image side in pixels.
        max_objects: at most this many objects per scene.
        unique_captions: redraw a scene whose canonical caption already occurred (for retrieval test sets).
    """
    rng = np.random.default_rng(seed)
    scenes: list[Scene] = []
    seen: set[str] = set()
    while len(scenes) < n:
        scene = sample_scene(rng, max_objects)
        if unique_captions and scene.captions[0] in seen:
            continue
        seen.add(scene.captions[0])
        scenes.append(scene)
    rendered = [render_scene_with_boxes(s, image_size, rng) for s in scenes]
    return CaptionWorld(np.stack([r[0] for r in rendered]), tuple(scenes), tuple(r[1] for r in rendered))


def write_caption_world(world: CaptionWorld, root: str | Path, name: str, all_captions: bool = True) -> Path:
    """Write PNG images under ``root/images/<name>/`` and an ALBEF-format JSON ``root/<name>.json``.

    Each JSON entry is ``{"image": "images/<name>/<i>.png", "caption": [captions] or canonical caption,
    "image_id": i, "concepts": [exact concepts], "boxes": [[x, y, w, h] per object]}`` with paths relative to
    ``root`` (pass ``root`` as the image root).

    Returns:
        The JSON path.
    """
    from PIL import Image

    root = Path(root)
    folder = root / "images" / name
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, (image, scene) in enumerate(zip(world.images, world.scenes, strict=True)):
        relative = f"images/{name}/{index:06d}.png"
        Image.fromarray(image).save(root / relative)
        caption: str | list[str] = list(scene.captions) if all_captions else scene.captions[0]
        entry = {"image": relative, "caption": caption, "image_id": index, "concepts": sorted(scene_concepts(scene))}
        if world.boxes:
            entry["boxes"] = [list(box) for box in world.boxes[index]]
        entries.append(entry)
    path = root / f"{name}.json"
    path.write_text(json.dumps(entries))
    return path


# ------------------------------------------------------------------------------------------------ downstream tasks
# Each generator reads the scene graph (and the grid cells), so every answer, label and box is exact.
def _count(scene: Scene, **attributes: str) -> int:
    return sum(all(getattr(o, k) == v for k, v in attributes.items()) for o in scene.objects)


def _lies(a: SceneObject, relation: str, b: SceneObject) -> bool:
    """Whether ``a <relation> b`` holds on the grid (any two distinct cells, not only the captioned pairs)."""
    return {
        "left of": a.col < b.col,
        "right of": a.col > b.col,
        "above": a.row < b.row,
        "below": a.row > b.row,
    }[relation]


def vqa_questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Every answerable question of the templates below about a scene, with its exact answer.

    Templates: the colour of a unique shape, the shape of a unique colour, the size of a unique (colour, shape), the
    number of objects, "is there a <colour> <shape>" (yes, and a sampled no), and the shape of the only object in a
    relation with a unique (colour, shape).
    """
    colours = list(COLOURS)
    out = [("how many objects are there", NUMBERS[len(scene.objects)])]
    for obj in scene.objects:
        if _count(scene, shape=obj.shape) == 1:
            out.append((f"what colour is the {obj.shape}", obj.colour))
        if _count(scene, colour=obj.colour) == 1:
            out.append((f"what shape is the {obj.colour} object", obj.shape))
        if _count(scene, colour=obj.colour, shape=obj.shape) == 1:
            out.append((f"what size is the {obj.colour} {obj.shape}", obj.size))
            for relation in RELATIONS:
                related = [o for o in scene.objects if o is not obj and _lies(o, relation, obj)]
                if len(related) == 1:
                    out.append((f"what is {relation} the {obj.colour} {obj.shape}", related[0].shape))
    present = scene.objects[int(rng.integers(len(scene.objects)))]
    out.append((f"is there a {present.colour} {present.shape}", "yes"))
    while True:
        colour, shape = colours[int(rng.integers(len(colours)))], SHAPES[int(rng.integers(len(SHAPES)))]
        if _count(scene, colour=colour, shape=shape) == 0:
            out.append((f"is there a {colour} {shape}", "no"))
            return out


def nlvr_statement(left: Scene, right: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    """One statement about a pair of scenes (NLVR2-style: left and right image) and whether it is true.

    The truth value is drawn first (balanced, as NLVR2), then statements are drawn until one has it (at most 50).
    """
    want = bool(rng.random() < 0.5)
    for _ in range(50):
        sentence, truth = _nlvr_candidate(left, right, rng)
        if truth == want:
            break
    return sentence, truth


def _nlvr_candidate(left: Scene, right: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    template = int(rng.integers(4))
    colours = list(COLOURS)
    if template == 0:
        source = left if rng.random() < 0.5 else right
        obj = source.objects[int(rng.integers(len(source.objects)))]
        return f"the left image contains a {obj.colour} {obj.shape}", _count(
            left, colour=obj.colour, shape=obj.shape
        ) > 0
    if template == 1:
        pool = [o.shape for o in (*left.objects, *right.objects)] + list(SHAPES)
        shape = pool[int(rng.integers(len(pool)))]
        return f"both images contain a {shape}", _count(left, shape=shape) > 0 and _count(right, shape=shape) > 0
    if template == 2:
        total = len(left.objects) + len(right.objects)
        claimed = total if rng.random() < 0.5 else int(np.clip(total + rng.choice([-1, 1]), 2, 6))
        return f"there are {NUMBERS[claimed]} objects in total", claimed == total
    colour = colours[int(rng.integers(len(colours)))]
    more = len(left.objects) > len(right.objects)
    if rng.random() < 0.5:
        return "the left image has more objects than the right image", more
    return f"there is a {colour} object in both images", _count(left, colour=colour) > 0 and _count(
        right, colour=colour
    ) > 0


def entailment_hypothesis(scene: Scene, label: str, rng: np.random.Generator) -> str:
    """A hypothesis about the scene (the premise) with the given label: entailment, neutral or contradiction.

    Entailed: an object that is there, or a relation that holds. Contradicted: an object that is not there (half the
    time with an unobservable adjective, so that such a word alone does not give "neutral"), or a relation that does
    not hold. Neutral: an object that is there with an unobservable property ("a heavy red circle").
    """
    colours = list(COLOURS)
    objects = scene.objects
    obj = objects[int(rng.integers(len(objects)))]
    if label == "neutral":
        return f"there is a {UNOBSERVABLE[int(rng.integers(len(UNOBSERVABLE)))]} {obj.colour} {obj.shape}"
    if len(objects) > 1 and rng.random() < 0.5:
        a, b = (objects[i] for i in rng.choice(len(objects), 2, replace=False))
        options = [r for r in RELATIONS if _lies(a, r, b) == (label == "entailment")]
        relation = options[int(rng.integers(len(options)))]
        return f"a {a.colour} {a.shape} is {relation} a {b.colour} {b.shape}"
    if label == "entailment":
        return f"there is a {obj.size} {obj.colour} {obj.shape}"
    while True:
        colour, shape = colours[int(rng.integers(len(colours)))], SHAPES[int(rng.integers(len(SHAPES)))]
        if _count(scene, colour=colour, shape=shape) == 0:
            break
    if rng.random() < 0.5:
        return f"there is a {UNOBSERVABLE[int(rng.integers(len(UNOBSERVABLE)))]} {colour} {shape}"
    return f"there is a {colour} {shape}"


def referring_expression(scene: Scene, index: int) -> str | None:
    """The shortest appearance-only description that singles out object ``index`` (RefCOCO+ has no location words).

    Tried in order: "<shape>", "<colour> one", "<size> <shape>", "<colour> <shape>", "<size> <colour> <shape>";
    None when no description is unique.
    """
    obj = scene.objects[index]
    candidates = (
        ({"shape": obj.shape}, obj.shape),
        ({"colour": obj.colour}, f"{obj.colour} one"),
        ({"size": obj.size, "shape": obj.shape}, f"{obj.size} {obj.shape}"),
        ({"colour": obj.colour, "shape": obj.shape}, f"{obj.colour} {obj.shape}"),
        ({"size": obj.size, "colour": obj.colour, "shape": obj.shape}, f"{obj.size} {obj.colour} {obj.shape}"),
    )
    for attributes, text in candidates:
        if _count(scene, **attributes) == 1:
            return text
    return None
