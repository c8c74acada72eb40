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
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "CaptionWorld",
    "Scene",
    "SceneObject",
    "caption_world",
    "render_scene",
    "sample_scene",
    "scene_concepts",
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
    cell = image_size / GRID
    background = 0.12 + 0.10 * rng.random(3)
    image = np.broadcast_to(background, (image_size, image_size, 3)).copy()
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
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def scene_concepts(scene: Scene) -> set[str]:
    """The exact concepts an image shows: its shapes, colours and sizes."""
    return {word for o in scene.objects for word in (o.shape, o.colour, o.size)}


@dataclass(frozen=True)
class CaptionWorld:
    """Images and their scene graphs.

    Attributes:
        images: ``uint8 [N, H, W, 3]``.
        scenes: one scene per image.
    """

    images: np.ndarray
    scenes: tuple[Scene, ...]

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
    images = np.stack([render_scene(s, image_size, rng) for s in scenes])
    return CaptionWorld(images, tuple(scenes))


def write_caption_world(world: CaptionWorld, root: str | Path, name: str, all_captions: bool = True) -> Path:
    """Write PNG images under ``root/images/<name>/`` and an ALBEF-format JSON ``root/<name>.json``.

    Each JSON entry is ``{"image": "images/<name>/<i>.png", "caption": [captions] or canonical caption,
    "image_id": i, "concepts": [exact concepts]}`` with paths relative to ``root`` (pass ``root`` as the image root).

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
        entries.append(
            {"image": relative, "caption": caption, "image_id": index, "concepts": sorted(scene_concepts(scene))}
        )
    path = root / f"{name}.json"
    path.write_text(json.dumps(entries))
    return path
