"""Procedural street scenes with exact 7-class labels, in several visual domains ("ToyDrive-Seg").

Every scene is painted from back to front: a sky gradient, the ground, building facades (with windows) and fences
behind a road trapezoid with its sidewalks, then trees, poles with signs, pedestrians and vehicles sorted by the
image row where they touch the ground (painter's order), each scaled by its distance to the horizon. The label of a
pixel is the class of the last thing painted on it, so labels are exact.

A domain is the pair (layout priors, appearance). The built-in domains mimic a synthetic source and three real
target datasets of continual UDA benchmarks: ``synthetic`` (GTA-like: flat saturated colours, sharp edges),
``city`` (Cityscapes-like: desaturated, textured, blurred, sensor noise), ``dusty`` (IDD-like: warm dusty hue, low
contrast, dirt roads without sidewalks, more pedestrians and vehicles) and ``varied`` (Mapillary-like: per-image
gamma and colour gains, horizon shifts, object scale changes); ``fog`` and ``night`` are weather/lighting variants
of ``city``.

Classes (Cityscapes categories): 0 flat, 1 construction, 2 object, 3 nature, 4 sky, 5 human, 6 vehicle.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from frugalvision.errors import ConfigError

__all__ = [
    "STREET_CLASSES",
    "STREET_DOMAINS",
    "StreetAppearance",
    "StreetDomain",
    "StreetLayout",
    "StreetScenes",
    "render_street",
    "render_streets",
    "street_domain",
]

STREET_CLASSES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
FLAT, CONSTRUCTION, OBJECT, NATURE, SKY, HUMAN, VEHICLE = range(7)

Colour = tuple[float, float, float]
Range = tuple[float, float]

#: base colours of the scene parts (an instance picks one and jitters it); domains override some parts
BASE_PALETTE: dict[str, tuple[Colour, ...]] = {
    "sky_top": ((0.25, 0.50, 0.95),),
    "sky_horizon": ((0.70, 0.82, 0.98),),
    "terrain": ((0.45, 0.68, 0.25), (0.40, 0.60, 0.22)),
    "road": ((0.38, 0.36, 0.40), (0.33, 0.33, 0.35)),
    "marking": ((0.95, 0.95, 0.90),),
    "sidewalk": ((0.72, 0.62, 0.58), (0.66, 0.64, 0.62)),
    "building": ((0.62, 0.32, 0.22), (0.80, 0.76, 0.62), (0.40, 0.46, 0.62), (0.70, 0.70, 0.70)),
    "window": ((0.15, 0.20, 0.30),),
    "fence": ((0.58, 0.52, 0.42), (0.50, 0.50, 0.50)),
    "pole": ((0.25, 0.25, 0.27),),
    "sign": ((0.90, 0.75, 0.05), (0.85, 0.10, 0.10), (0.10, 0.30, 0.85)),
    "foliage": ((0.15, 0.55, 0.12), (0.22, 0.62, 0.20)),
    "trunk": ((0.35, 0.22, 0.10),),
    "clothes": ((0.80, 0.10, 0.10), (0.10, 0.20, 0.70), (0.10, 0.10, 0.10), (0.90, 0.90, 0.20)),
    "skin": ((0.90, 0.70, 0.55), (0.60, 0.42, 0.30)),
    "car": ((0.80, 0.05, 0.05), (0.05, 0.10, 0.60), (0.90, 0.90, 0.90), (0.10, 0.10, 0.10), (0.90, 0.60, 0.00)),
    "glass": ((0.10, 0.15, 0.20),),
    "wheel": ((0.05, 0.05, 0.05),),
}


@dataclass(frozen=True)
class StreetLayout:
    """Content priors of a domain (fractions of the image height H / width W; counts are inclusive ranges).

    Attributes:
        horizon: range of the horizon row (fraction of H).
        road_width: range of the road width at the bottom row (fraction of W).
        sidewalk_width: range of each sidewalk's width at the bottom row (fraction of W); (0, 0) for none.
        buildings: facades per side.
        building_height: facade height range (fraction of H).
        fence_prob: probability of a fence on each side.
        trees: trees per scene.
        poles: poles (with a sign) per scene.
        humans: pedestrians per scene.
        vehicles: vehicles per scene.
        object_scale: range of a per-scene size factor of trees, poles, pedestrians and vehicles.
        markings: paint a dashed centre line.
    """

    horizon: Range = (0.38, 0.50)
    road_width: Range = (0.55, 0.80)
    sidewalk_width: Range = (0.10, 0.18)
    buildings: tuple[int, int] = (2, 4)
    building_height: Range = (0.25, 0.45)
    fence_prob: float = 0.3
    trees: tuple[int, int] = (0, 3)
    poles: tuple[int, int] = (1, 3)
    humans: tuple[int, int] = (0, 3)
    vehicles: tuple[int, int] = (1, 3)
    object_scale: Range = (1.0, 1.0)
    markings: bool = True


@dataclass(frozen=True)
class StreetAppearance:
    """How a domain looks: palette overrides and a photometric pipeline applied after painting.

    Attributes:
        palette: part name -> candidate colours, replacing :data:`BASE_PALETTE` entries.
        colour_jitter: per-instance colour jitter (uniform, +/-).
        saturation: saturation factor (1 keeps the painted colours).
        contrast: contrast factor around the image mean.
        brightness: brightness factor.
        tint: per-channel gains.
        texture: amplitude of a low-frequency multiplicative texture.
        grain: amplitude of a per-pixel multiplicative texture.
        blur: passes of a [1, 2, 1] / 4 blur.
        noise: standard deviation of additive sensor noise.
        gamma: range of a per-image gamma.
        gain_jitter: per-image per-channel gains drawn in [1 - j, 1 + j].
        fog: fog density (0 none); the fog is thickest at the horizon.
        night: darkening strength in [0, 1] (0 day).
    """

    palette: Mapping[str, tuple[Colour, ...]] = field(default_factory=dict)
    colour_jitter: float = 0.05
    saturation: float = 1.0
    contrast: float = 1.0
    brightness: float = 1.0
    tint: Colour = (1.0, 1.0, 1.0)
    texture: float = 0.0
    grain: float = 0.0
    blur: int = 0
    noise: float = 0.0
    gamma: Range = (1.0, 1.0)
    gain_jitter: float = 0.0
    fog: float = 0.0
    night: float = 0.0


@dataclass(frozen=True)
class StreetDomain:
    """A visual domain: a name, layout priors and an appearance."""

    name: str
    layout: StreetLayout = field(default_factory=StreetLayout)
    appearance: StreetAppearance = field(default_factory=StreetAppearance)


_CITY = StreetDomain(
    "city",
    StreetLayout(buildings=(3, 5), trees=(1, 3)),
    StreetAppearance(
        palette={
            "building": ((0.55, 0.55, 0.55), (0.62, 0.58, 0.52), (0.45, 0.45, 0.48)),
            "road": ((0.42, 0.42, 0.42),),
        },
        saturation=0.45,
        brightness=0.92,
        tint=(0.95, 1.0, 1.05),
        texture=0.18,
        grain=0.06,
        blur=1,
        noise=0.025,
    ),
)

STREET_DOMAINS: dict[str, StreetDomain] = {
    "synthetic": StreetDomain("synthetic", appearance=StreetAppearance(saturation=1.25, colour_jitter=0.08)),
    "city": _CITY,
    "dusty": StreetDomain(
        "dusty",
        StreetLayout(
            sidewalk_width=(0.0, 0.0),
            road_width=(0.45, 0.70),
            humans=(2, 5),
            vehicles=(2, 4),
            building_height=(0.15, 0.30),
            fence_prob=0.1,
        ),
        StreetAppearance(
            palette={
                "road": ((0.55, 0.46, 0.36), (0.50, 0.44, 0.38)),
                "terrain": ((0.62, 0.55, 0.36), (0.55, 0.52, 0.30)),
                "sky_top": ((0.62, 0.66, 0.70),),
                "sky_horizon": ((0.82, 0.78, 0.70),),
                "building": ((0.80, 0.62, 0.45), (0.55, 0.70, 0.62), (0.85, 0.80, 0.55), (0.70, 0.45, 0.40)),
            },
            tint=(1.12, 1.0, 0.78),
            contrast=0.6,
            texture=0.10,
            noise=0.015,
        ),
    ),
    "varied": StreetDomain(
        "varied",
        StreetLayout(horizon=(0.28, 0.58), object_scale=(0.7, 1.4), trees=(0, 4)),
        StreetAppearance(gamma=(0.6, 1.6), gain_jitter=0.3, texture=0.08, noise=0.02, colour_jitter=0.12),
    ),
    "fog": replace(_CITY, name="fog", appearance=replace(_CITY.appearance, fog=0.7)),
    "night": replace(_CITY, name="night", appearance=replace(_CITY.appearance, night=0.75, noise=0.04)),
}


def street_domain(name: str | StreetDomain) -> StreetDomain:
    """A built-in domain by name (a :class:`StreetDomain` is returned as is).

    Raises:
        ConfigError: unknown name.
    """
    if isinstance(name, StreetDomain):
        return name
    if name not in STREET_DOMAINS:
        raise ConfigError(f"unknown street domain {name!r}; choose one of: {', '.join(STREET_DOMAINS)}")
    return STREET_DOMAINS[name]


# ------------------------------------------------------------------------------------------------ painting
class _Canvas:
    """An RGB image, its label map and the pixel-centre grids, painted in place."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.label = np.full((height, width), SKY, np.uint8)
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5

    def paint(self, mask: np.ndarray, colour: np.ndarray, label: int) -> None:
        self.rgb[mask] = colour
        self.label[mask] = label

    def rect(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((self.xx - cx) / max(rx, 0.5)) ** 2 + ((self.yy - cy) / max(ry, 0.5)) ** 2 <= 1.0


@dataclass(frozen=True)
class _Scene:
    """Per-scene geometry drawn from the layout priors."""

    horizon: float
    vanish_x: float
    road_half: float
    sidewalk: float
    scale: float

    def ground_t(self, y: np.ndarray | float, height: int) -> np.ndarray | float:
        """Perspective depth factor: 0 at the horizon, 1 at the bottom row."""
        return np.clip((np.asarray(y) - self.horizon) / (height - self.horizon), 0.0, 1.0)


class _Painter:
    """Paints one scene of a domain with one random generator."""

    def __init__(self, domain: StreetDomain, rng: np.random.Generator, height: int, width: int) -> None:
        self.domain, self.rng = domain, rng
        self.layout, self.look = domain.layout, domain.appearance
        self.canvas = _Canvas(height, width)
        self.palette = {**BASE_PALETTE, **dict(self.look.palette)}

    def colour(self, part: str) -> np.ndarray:
        options = self.palette[part]
        base = np.asarray(options[self.rng.integers(len(options))], np.float32)
        jitter = self.rng.uniform(-self.look.colour_jitter, self.look.colour_jitter, 3).astype(np.float32)
        return np.clip(base + jitter, 0.0, 1.0)

    def uniform(self, bounds: Range) -> float:
        return float(self.rng.uniform(*bounds)) if bounds[1] > bounds[0] else float(bounds[0])

    def count(self, bounds: tuple[int, int]) -> int:
        return int(self.rng.integers(bounds[0], bounds[1] + 1))

    def scene(self) -> _Scene:
        h, w = self.canvas.height, self.canvas.width
        return _Scene(
            horizon=self.uniform(self.layout.horizon) * h,
            vanish_x=self.uniform((0.4, 0.6)) * w,
            road_half=self.uniform(self.layout.road_width) * w / 2,
            sidewalk=self.uniform(self.layout.sidewalk_width) * w,
            scale=self.uniform(self.layout.object_scale),
        )

    def paint(self) -> tuple[np.ndarray, np.ndarray]:
        scene = self.scene()
        self.sky(scene)
        self.ground(scene)
        self.buildings(scene)
        self.fences(scene)
        self.road(scene)
        for _, draw in sorted(self.objects(scene), key=lambda item: item[0]):
            draw()
        return self.canvas.rgb, self.canvas.label

    # -------------------------------------------------------------------------------------------- background
    def sky(self, scene: _Scene) -> None:
        c = self.canvas
        t = np.clip(c.yy / max(scene.horizon, 1.0), 0.0, 1.0)[..., None]
        c.rgb[:] = (1 - t) * self.colour("sky_top") + t * self.colour("sky_horizon")
        c.label[:] = SKY

    def ground(self, scene: _Scene) -> None:
        c = self.canvas
        c.paint(c.yy >= scene.horizon, self.colour("terrain"), NATURE)

    def buildings(self, scene: _Scene) -> None:
        c = self.canvas
        for side in (-1, 1):
            edge = scene.vanish_x + side * (scene.road_half * 0.15 + 1.0)
            limit = 0.0 if side < 0 else float(c.width)
            bounds = np.sort(self.rng.uniform(min(edge, limit), max(edge, limit), self.count(self.layout.buildings)))
            cuts = [min(edge, limit), *bounds.tolist(), max(edge, limit)]
            for x0, x1 in zip(cuts[:-1], cuts[1:]):
                if self.rng.random() < 0.2 or x1 - x0 < 1.0:
                    continue  # a gap between facades shows the sky
                self.facade(scene, x0, x1, side)

    def facade(self, scene: _Scene, x0: float, x1: float, side: int) -> None:
        c = self.canvas
        centre = (x0 + x1) / 2
        nearness = abs(centre - scene.vanish_x) / (c.width / 2)
        base = scene.horizon + nearness * 0.3 * (c.height - scene.horizon)
        top = base - self.uniform(self.layout.building_height) * c.height * (0.6 + nearness)
        mask = c.rect(x0, x1, top, base)
        c.paint(mask, self.colour("building"), CONSTRUCTION)
        period_x, period_y = max(2.0, 0.05 * c.width), max(2.0, 0.08 * c.height)
        windows = mask & ((c.xx - x0) % period_x < period_x / 2) & ((c.yy - top) % period_y < period_y / 2)
        c.paint(windows & (c.yy < base - period_y / 2), self.colour("window"), CONSTRUCTION)

    def fences(self, scene: _Scene) -> None:
        c = self.canvas
        for side in (-1, 1):
            if self.rng.random() >= self.layout.fence_prob:
                continue
            y_base = scene.horizon + self.uniform((0.15, 0.45)) * (c.height - scene.horizon)
            t = float(scene.ground_t(y_base, c.height))
            outer = scene.vanish_x + side * (scene.road_half + scene.sidewalk) * t
            x0, x1 = (0.0, outer) if side < 0 else (outer, float(c.width))
            c.paint(c.rect(x0, x1, y_base - 0.1 * c.height * t - 1, y_base), self.colour("fence"), CONSTRUCTION)

    def road(self, scene: _Scene) -> None:
        c = self.canvas
        t = scene.ground_t(c.yy, c.height)
        below = c.yy >= scene.horizon
        offset = np.abs(c.xx - scene.vanish_x)
        if scene.sidewalk > 0:
            c.paint(below & (offset <= (scene.road_half + scene.sidewalk) * t + 0.5), self.colour("sidewalk"), FLAT)
        road = below & (offset <= scene.road_half * t + 0.5)
        c.paint(road, self.colour("road"), FLAT)
        if self.layout.markings:
            dash = max(2.0, 0.08 * c.height)
            centre = road & (offset <= 0.012 * c.width * t + 0.3) & ((c.yy - scene.horizon) % (2 * dash) < dash)
            c.paint(centre, self.colour("marking"), FLAT)

    # -------------------------------------------------------------------------------------------- objects
    def objects(self, scene: _Scene) -> list[tuple[float, object]]:
        """(ground-contact row, paint callback) of every foreground object."""
        items: list[tuple[float, object]] = []
        for name, draw in (("trees", self.tree), ("poles", self.pole), ("humans", self.human)):
            for _ in range(self.count(getattr(self.layout, name))):
                y0, x0, s = self.place(scene, on_road=False)
                items.append((y0, lambda d=draw, a=(x0, y0, s): d(*a)))
        for _ in range(self.count(self.layout.vehicles)):
            y0, x0, s = self.place(scene, on_road=True)
            items.append((y0, lambda a=(x0, y0, s): self.vehicle(*a)))
        return items

    def place(self, scene: _Scene, on_road: bool) -> tuple[float, float, float]:
        """A ground-contact point (row, column) and the object's size factor."""
        h = self.canvas.height
        y0 = scene.horizon + self.rng.uniform(0.08, 1.0) * (h - scene.horizon)
        t = float(scene.ground_t(y0, h))
        if on_road:
            x0 = scene.vanish_x + self.rng.uniform(-0.8, 0.8) * scene.road_half * t
        else:
            side = -1 if self.rng.random() < 0.5 else 1
            beyond = scene.road_half + self.rng.uniform(0.3, 1.0) * max(scene.sidewalk, 0.1 * self.canvas.width)
            x0 = scene.vanish_x + side * beyond * t
        return y0, x0, max(t, 0.05) * scene.scale

    def tree(self, x0: float, y0: float, s: float) -> None:
        c = self.canvas
        trunk_w, height = max(1.0, 0.02 * c.width * s), 0.45 * c.height * s
        c.paint(c.rect(x0 - trunk_w / 2, x0 + trunk_w / 2, y0 - height * 0.6, y0), self.colour("trunk"), NATURE)
        radius = 0.22 * c.height * s
        canopy = c.ellipse(x0, y0 - height * 0.6 - radius * 0.6, radius * 0.9, radius)
        c.paint(canopy, self.colour("foliage"), NATURE)

    def pole(self, x0: float, y0: float, s: float) -> None:
        c = self.canvas
        width, height = max(1.0, 0.012 * c.width * s), 0.6 * c.height * s
        c.paint(c.rect(x0 - width / 2, x0 + width / 2, y0 - height, y0), self.colour("pole"), OBJECT)
        size = max(1.0, 0.08 * c.height * s)
        sign = (
            c.ellipse(x0, y0 - height, size, size)
            if self.rng.random() < 0.5
            else c.rect(x0 - size, x0 + size, y0 - height - size, y0 - height + size)
        )
        c.paint(sign, self.colour("sign"), OBJECT)

    def human(self, x0: float, y0: float, s: float) -> None:
        c = self.canvas
        height, width = 0.32 * c.height * s, max(1.0, 0.035 * c.width * s)
        c.paint(c.rect(x0 - width / 2, x0 + width / 2, y0 - height * 0.8, y0), self.colour("clothes"), HUMAN)
        head = max(0.6, height * 0.12)
        c.paint(c.ellipse(x0, y0 - height * 0.8 - head, head, head), self.colour("skin"), HUMAN)

    def vehicle(self, x0: float, y0: float, s: float) -> None:
        c = self.canvas
        width, height = 0.28 * c.width * s, 0.16 * c.height * s
        body = c.rect(x0 - width / 2, x0 + width / 2, y0 - height, y0 - height * 0.15)
        c.paint(body, self.colour("car"), VEHICLE)
        cabin = c.rect(x0 - width * 0.32, x0 + width * 0.32, y0 - height * 1.6, y0 - height)
        c.paint(cabin, self.colour("car"), VEHICLE)
        glass = c.rect(x0 - width * 0.26, x0 + width * 0.26, y0 - height * 1.5, y0 - height * 1.05)
        c.paint(glass, self.colour("glass"), VEHICLE)
        radius = max(0.6, height * 0.3)
        for dx in (-0.3, 0.3):
            c.paint(c.ellipse(x0 + dx * width, y0 - radius, radius, radius), self.colour("wheel"), VEHICLE)


# ------------------------------------------------------------------------------------------------ appearance
def _blur(image: np.ndarray, passes: int) -> np.ndarray:
    for _ in range(passes):
        padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
        image = (padded[:-2, 1:-1] + 2 * padded[1:-1, 1:-1] + padded[2:, 1:-1]) / 4
        padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
        image = (padded[1:-1, :-2] + 2 * padded[1:-1, 1:-1] + padded[1:-1, 2:]) / 4
    return image


def _low_frequency(rng: np.random.Generator, height: int, width: int, cell: int = 4) -> np.ndarray:
    coarse = rng.standard_normal((-(-height // cell) + 1, -(-width // cell) + 1)).astype(np.float32)
    fine = np.kron(coarse, np.ones((cell, cell), np.float32))[:height, :width, None]
    return _blur(fine, 2)


def _photometric(rgb: np.ndarray, look: StreetAppearance, horizon: float, rng: np.random.Generator) -> np.ndarray:
    """The domain's appearance pipeline on a painted image (values clipped to [0, 1])."""
    h, w, _ = rgb.shape
    if look.texture:
        rgb = rgb * (1 + look.texture * _low_frequency(rng, h, w))
    if look.grain:
        rgb = rgb * (1 + look.grain * rng.standard_normal((h, w, 1)).astype(np.float32))
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = grey + look.saturation * (rgb - grey)
    rgb = rgb.mean() + look.contrast * (rgb - rgb.mean())
    rgb = rgb * look.brightness * np.asarray(look.tint, np.float32)
    if look.gain_jitter:
        rgb = rgb * rng.uniform(1 - look.gain_jitter, 1 + look.gain_jitter, 3).astype(np.float32)
    rgb = np.clip(rgb, 0.0, 1.0) ** (rng.uniform(*look.gamma) if look.gamma[1] > look.gamma[0] else look.gamma[0])
    if look.fog:
        rows = np.arange(h, dtype=np.float32)[:, None, None] + 0.5
        density = look.fog * np.exp(-np.abs(rows - horizon) / (0.35 * h))
        rgb = (1 - density) * rgb + density * np.float32(0.75)
    if look.night:
        rgb = rgb * (1 - look.night) * np.asarray((0.8, 0.9, 1.2), np.float32)
    rgb = _blur(rgb, look.blur)
    if look.noise:
        rgb = rgb + look.noise * rng.standard_normal(rgb.shape).astype(np.float32)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------ public
def _scene_rng(domain: StreetDomain, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(domain.name.encode()), seed, index])


def render_street(
    domain: str | StreetDomain, height: int = 48, width: int = 96, seed: int = 0, index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(rgb float32 (H, W, 3) in [0, 1], labels uint8 (H, W) in 0..6)``, fixed by (domain, seed, index)."""
    if height < 8 or width < 8:
        raise ConfigError(f"street scenes need at least 8 x 8 pixels (got {height} x {width}); enlarge the image")
    domain = street_domain(domain)
    rng = _scene_rng(domain, seed, index)
    painter = _Painter(domain, rng, height, width)
    rgb, labels = painter.paint()
    horizon = float(np.argmax((labels != SKY).any(axis=1))) if (labels != SKY).any() else height / 2
    return _photometric(rgb, domain.appearance, horizon, rng), labels


def render_streets(
    domain: str | StreetDomain, count: int, height: int = 48, width: int = 96, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes stacked: ``(N, H, W, 3)`` float32 images and ``(N, H, W)`` uint8 labels."""
    if count < 1:
        raise ConfigError(f"count={count} is invalid; render at least one scene")
    scenes = [render_street(domain, height, width, seed, i) for i in range(count)]
    return np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])


class StreetScenes(Dataset):
    """Rendered scenes as a dataset of ``(image (3, H, W) float in [0, 1], labels (H, W) int64)``.

    Args:
        images: ``(N, H, W, 3)`` float images (or a tensor ``(N, 3, H, W)``).
        labels: ``(N, H, W)`` integer labels.
        name: the domain's name (for reports).
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, name: str = "") -> None:
        images_t = torch.as_tensor(images, dtype=torch.float32)
        if images_t.ndim == 4 and images_t.shape[-1] == 3:
            images_t = images_t.permute(0, 3, 1, 2)
        self.images = images_t.contiguous()
        self.labels = torch.as_tensor(labels).long()
        self.name = name
        if len(self.images) != len(self.labels) or self.images.shape[-2:] != self.labels.shape[-2:]:
            raise ConfigError(
                f"images {tuple(self.images.shape)} and labels {tuple(self.labels.shape)} disagree; pass one "
                "label map per image, of the image's size"
            )

    @classmethod
    def render(cls, domain: str | StreetDomain, count: int, height: int = 48, width: int = 96, seed: int = 0):
        """Render ``count`` scenes of a domain into a dataset."""
        domain = street_domain(domain)
        return cls(*render_streets(domain, count, height, width, seed), name=domain.name)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]
