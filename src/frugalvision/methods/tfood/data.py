"""Recipe1M in its real file formats: generator ("MiniRecipe1M"), loader, dataset, batch order, collate.

Real layout under ``<root>/recipe1m``: ``layer1.json`` (recipes), ``layer2.json`` (images per recipe),
``det_ingrs.json`` (detected ingredient names), ``classes1M.json`` (our JSON form of ``classes1M.pkl``: see
:func:`convert_classes_pickle`), and ``images/<partition>/<c0>/<c1>/<c2>/<c3>/<image id>``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from frugalvision.engine import derive_seed
from frugalvision.errors import DataError
from frugalvision.methods.tfood.text import WordPieceTokenizer, WordTokenizer, pad_recipes

__all__ = [
    "PARTITIONS",
    "Recipe",
    "RecipeImageDataset",
    "class_pair_order",
    "collate_pairs",
    "convert_classes_pickle",
    "image_path",
    "load_recipe1m",
    "write_mini_recipe1m",
]

PARTITIONS = ("train", "val", "test")
BACKGROUND = "background"


@dataclass
class Recipe:
    """One Recipe1M recipe with its images and class.

    Attributes:
        id: 10-hex-character recipe id.
        title: title text.
        ingredients: raw ingredient lines (with quantities).
        instructions: instruction lines.
        partition: "train", "val" or "test".
        images: image files of the recipe (may be empty).
        label: food class index, 0 = background.
        det_ingredients: detected ingredient names (only when det_ingrs.json was requested).
    """

    id: str
    title: str
    ingredients: list[str]
    instructions: list[str]
    partition: str
    images: list[Path] = field(default_factory=list)
    label: int = 0
    det_ingredients: list[str] | None = None


def image_path(root: str | Path, partition: str, image_id: str) -> Path:
    """``<root>/recipe1m/images/<partition>/<c0>/<c1>/<c2>/<c3>/<image_id>`` (the official nested layout)."""
    return (
        Path(root)
        / "recipe1m"
        / "images"
        / partition
        / image_id[0]
        / image_id[1]
        / image_id[2]
        / image_id[3]
        / image_id
    )


# ----------------------------------------------------------------------------------------------- generator
_DISHES: dict[str, dict[str, Any]] = {
    "pizza": {
        "plate": "disk",
        "words": ("margherita", "rustic", "thin crust"),
        "pool": ("flour", "tomato", "mozzarella", "basil", "olive oil", "yeast", "oregano", "ham", "mushroom"),
    },
    "salad": {
        "plate": "bowl",
        "words": ("fresh", "garden", "summer"),
        "pool": ("lettuce", "cucumber", "tomato", "olive oil", "lemon", "feta", "red onion", "olive", "pepper"),
    },
    "soup": {
        "plate": "bowl",
        "words": ("creamy", "hearty", "winter"),
        "pool": ("carrot", "onion", "potato", "cream", "stock", "celery", "leek", "garlic", "pumpkin"),
    },
    "cake": {
        "plate": "square",
        "words": ("chocolate", "birthday", "sponge"),
        "pool": ("flour", "sugar", "butter", "egg", "cocoa", "milk", "vanilla", "strawberry", "cream"),
    },
    "pasta": {
        "plate": "disk",
        "words": ("spicy", "classic", "baked"),
        "pool": ("spaghetti", "tomato", "garlic", "parmesan", "basil", "olive oil", "beef", "chili", "cream"),
    },
    "curry": {
        "plate": "bowl",
        "words": ("thai", "green", "chicken"),
        "pool": ("chicken", "coconut milk", "curry paste", "rice", "onion", "chili", "spinach", "ginger", "lime"),
    },
    "pancakes": {
        "plate": "disk",
        "words": ("fluffy", "breakfast", "buttermilk"),
        "pool": ("flour", "egg", "milk", "butter", "maple syrup", "blueberry", "sugar", "banana", "cinnamon"),
    },
    "sushi": {
        "plate": "square",
        "words": ("salmon", "tuna", "vegetable"),
        "pool": ("rice", "nori", "salmon", "avocado", "cucumber", "soy sauce", "tuna", "wasabi", "ginger"),
    },
    "burger": {
        "plate": "square",
        "words": ("cheese", "double", "veggie"),
        "pool": ("beef", "bun", "cheddar", "lettuce", "tomato", "onion", "pickle", "ketchup", "bacon"),
    },
    "smoothie": {
        "plate": "glass",
        "words": ("berry", "tropical", "green"),
        "pool": ("banana", "strawberry", "blueberry", "yogurt", "milk", "spinach", "mango", "honey", "ice"),
    },
}
_UNITS = ("cups", "tablespoons", "teaspoons", "grams", "ounces", "pinch of", "cloves", "slices")
_STEPS = (
    "preheat the oven to {n} degrees",
    "mix the {a} with the {b}",
    "chop the {a} finely",
    "stir in the {a} and cook for {m} minutes",
    "add the {a} and the {b}",
    "season with {a} to taste",
    "bake for {m} minutes until golden",
    "let it rest for {m} minutes",
    "serve with {a}",
    "whisk the {a} until smooth",
)


def _ingredient_table() -> tuple[list[str], np.ndarray]:
    names = sorted({name for dish in _DISHES.values() for name in dish["pool"]} | {"salt", "water", "parsley"})
    rng = np.random.default_rng(12345)
    colours = rng.uniform(0.05, 0.95, size=(len(names), 3))
    return names, colours


def _render(rng: np.random.Generator, size: int, plate: str, items: Sequence[int], colours: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.ones((size, size, 3), np.float32) * rng.uniform(0.55, 0.85, size=3)
    img += rng.normal(0, 0.03, size=img.shape)
    plate_col = np.array([0.95, 0.95, 0.92]) * rng.uniform(0.9, 1.0)
    cx, cy = 0.5 + rng.normal(0, 0.03, 2)
    r2 = (xx - cx) ** 2 + (yy - cy) ** 2
    if plate == "disk":
        mask = r2 < 0.42**2
    elif plate == "bowl":
        mask = r2 < 0.38**2
    elif plate == "square":
        mask = (np.abs(xx - cx) < 0.38) & (np.abs(yy - cy) < 0.38)
    else:  # glass
        mask = (np.abs(xx - cx) < 0.22) & (yy > 0.12) & (yy < 0.9)
    img[mask] = plate_col
    if plate == "bowl":
        img[mask & (r2 >= 0.30**2)] = plate_col * 0.7
    for k in items:
        r = rng.uniform(0.09, 0.14)
        ox, oy = cx + rng.uniform(-0.22, 0.22), cy + rng.uniform(-0.22, 0.22)
        if k % 2 == 0:  # each ingredient has its own colour and shape
            blob = (xx - ox) ** 2 + (yy - oy) ** 2 < r**2
        else:
            blob = (np.abs(xx - ox) < r) & (np.abs(yy - oy) < r * 0.7)
        img[blob] = colours[k] + rng.normal(0, 0.04, size=3)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_mini_recipe1m(
    root: str | Path,
    num_recipes: int = 1600,
    split: tuple[float, float, float] = (0.75, 0.125, 0.125),
    background_fraction: float = 0.5,
    max_images: int = 3,
    image_size: int = 32,
    seed: int = 0,
) -> Path:
    """Write a procedural Recipe1M-like dataset in the real formats under ``<root>/recipe1m``.

    Ten dish classes (plus background 0), each with title words and an ingredient pool; ingredient lines carry
    quantities; instructions mention the ingredients; every recipe gets 0..max_images JPEGs (at least one for the
    val/test recipes) drawn from its ingredients (one coloured blob per ingredient, the class sets the plate).

    Returns:
        The ``<root>/recipe1m`` folder.
    """
    rng = np.random.default_rng(seed)
    names, colours = _ingredient_table()
    dishes = list(_DISHES)
    base = Path(root) / "recipe1m"
    base.mkdir(parents=True, exist_ok=True)
    counts = [round(num_recipes * f) for f in split[:2]]
    partitions = ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * (num_recipes - sum(counts))
    layer1, layer2, det, classes = [], [], [], {}
    used_ids: set[str] = set()
    for partition in partitions:
        rid = ""
        while not rid or rid in used_ids:
            rid = "".join(rng.choice(list("0123456789abcdef"), 10))
        used_ids.add(rid)
        if rng.random() < background_fraction:
            label, plate = 0, str(rng.choice(["disk", "bowl", "square", "glass"]))
            chosen = list(rng.choice(len(names), size=int(rng.integers(3, 7)), replace=False))
            title = f"homemade {names[chosen[0]]} and {names[chosen[1]]}"
        else:
            label = int(rng.integers(1, len(dishes) + 1))
            dish = _DISHES[dishes[label - 1]]
            plate = dish["plate"]
            pool = [names.index(n) for n in dish["pool"]]
            chosen = list(rng.choice(pool, size=int(rng.integers(3, 7)), replace=False))
            title = f"{rng.choice(dish['words'])} {dishes[label - 1]} with {names[chosen[0]]}"
        ingredient_lines = [f"{int(rng.integers(1, 5))} {rng.choice(_UNITS)} {names[k]}" for k in chosen]
        steps = []
        for _ in range(int(rng.integers(2, 6))):
            a, b = rng.choice(chosen, 2, replace=False)
            template = str(rng.choice(_STEPS))
            steps.append(
                template.format(a=names[a], b=names[b], n=int(rng.integers(3, 5)) * 50, m=int(rng.integers(5, 40)))
            )
        layer1.append(
            {
                "id": rid,
                "title": title,
                "ingredients": [{"text": t} for t in ingredient_lines],
                "instructions": [{"text": t} for t in steps],
                "partition": partition,
                "url": f"http://example.invalid/recipe/{rid}",
            }
        )
        det.append({"id": rid, "ingredients": [{"text": names[k]} for k in chosen], "valid": [True] * len(chosen)})
        classes[rid] = label
        n_images = int(rng.integers(0 if partition == "train" else 1, max_images + 1))
        images = []
        for _ in range(n_images):
            image_id = "".join(rng.choice(list("0123456789abcdef"), 10)) + ".jpg"
            path = image_path(root, partition, image_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_render(rng, image_size, plate, chosen, colours)).save(path, quality=95)
            images.append({"id": image_id, "url": f"http://example.invalid/img/{image_id}"})
        if images:
            layer2.append({"id": rid, "images": images})
    (base / "layer1.json").write_text(json.dumps(layer1))
    (base / "layer2.json").write_text(json.dumps(layer2))
    (base / "det_ingrs.json").write_text(json.dumps(det))
    (base / "classes1M.json").write_text(json.dumps({"class_names": [BACKGROUND, *dishes], "recipe_classes": classes}))
    return base


# ----------------------------------------------------------------------------------------------- loader
class _PlainUnpickler(pickle.Unpickler):
    """Unpickler for plain data only: any reference to a class or function is refused."""

    def __init__(self, handle: Any, source: str) -> None:
        super().__init__(handle)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(f"{self.source} references {module}.{name}; only plain dicts/lists of ids and names load")


def convert_classes_pickle(pickle_path: str | Path, json_path: str | Path, trust: bool = False) -> Path:
    """Convert the official ``classes1M.pkl`` (two consecutive pickles: recipe id -> class, class -> name) to JSON.

    Pickles are refused unless ``trust=True``; even then the file is read with an unpickler that resolves no
    global names, so only plain containers, strings and numbers load and no code from the file runs. Class 0 stays
    "background".
    """
    if not trust:
        raise DataError(f"{pickle_path} is a pickle; convert it only if you trust it: pass trust=True")
    with open(pickle_path, "rb") as handle:
        unpickler = _PlainUnpickler(handle, str(pickle_path))
        recipe_classes = unpickler.load()
        class_names = unpickler.load()
    names = [class_names[i] for i in range(len(class_names))] if isinstance(class_names, dict) else list(class_names)
    Path(json_path).write_text(
        json.dumps({"class_names": names, "recipe_classes": {k: int(v) for k, v in recipe_classes.items()}})
    )
    return Path(json_path)


def _text_list(record: dict[str, Any], key: str, where: str) -> list[str]:
    items = record.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("text"), str) for i in items):
        raise DataError(f"{where}: '{key}' must be a list of {{\"text\": str}}; fix or drop this record")
    return [i["text"] for i in items]


def load_recipe1m(
    root: str | Path, partitions: Sequence[str] = PARTITIONS, with_det_ingrs: bool = False, check_images: bool = True
) -> tuple[list[Recipe], list[str]]:
    """Read Recipe1M (or a file-compatible set) from ``<root>/recipe1m``.

    Args:
        root: data root (the folder containing ``recipe1m/``).
        partitions: which partitions to keep.
        with_det_ingrs: also read det_ingrs.json into ``Recipe.det_ingredients``.
        check_images: drop image entries whose file is missing (Recipe1M has some).

    Returns:
        (recipes in layer1 order, class names with 0 = background).

    Raises:
        DataError: a missing file or a malformed record (the message names the file, record index and id).
    """
    base = Path(root) / "recipe1m"
    layer1_path = base / "layer1.json"
    if not layer1_path.is_file():
        raise DataError(f"{layer1_path} not found; point data_root at the folder that contains recipe1m/")
    layer1 = json.loads(layer1_path.read_text())
    layer2_path = base / "layer2.json"
    layer2 = json.loads(layer2_path.read_text()) if layer2_path.is_file() else []
    images_of: dict[str, list[str]] = {}
    for n, record in enumerate(layer2):
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("id"), str)
            or not isinstance(record.get("images"), list)
        ):
            raise DataError(f"{layer2_path} record {n}: needs 'id' (str) and 'images' (list); fix or drop it")
        ids = []
        for image in record["images"]:
            if not isinstance(image, dict) or not isinstance(image.get("id"), str) or len(image["id"]) < 4:
                raise DataError(f"{layer2_path} record {n} (id {record['id']}): bad image entry {image!r}")
            ids.append(image["id"])
        images_of[record["id"]] = ids
    classes_path = base / "classes1M.json"
    if classes_path.is_file():
        table = json.loads(classes_path.read_text())
        class_names, recipe_classes = list(table["class_names"]), dict(table["recipe_classes"])
    else:
        if (base / "classes1M.pkl").is_file():
            raise DataError(
                f"{base / 'classes1M.pkl'} is a pickle; convert it once with "
                "frugalvision.methods.tfood.data.convert_classes_pickle(..., trust=True) to classes1M.json"
            )
        class_names, recipe_classes = [BACKGROUND], {}
    det_of: dict[str, list[str]] = {}
    if with_det_ingrs:
        det_path = base / "det_ingrs.json"
        for n, record in enumerate(json.loads(det_path.read_text())):
            where = f"{det_path} record {n} (id {record.get('id')!r})"
            names = _text_list(record, "ingredients", where)
            valid = record.get("valid", [True] * len(names))
            det_of[record["id"]] = [t for t, ok in zip(names, valid, strict=False) if ok]
    recipes = []
    for n, record in enumerate(layer1):
        rid = record.get("id") if isinstance(record, dict) else None
        where = f"{layer1_path} record {n} (id {rid!r})"
        if not isinstance(rid, str) or not rid:
            raise DataError(f"{where}: 'id' must be a non-empty string; fix or drop this record")
        if not isinstance(record.get("title"), str):
            raise DataError(f"{where}: 'title' must be a string; fix or drop this record")
        partition = record.get("partition")
        if partition not in PARTITIONS:
            raise DataError(f"{where}: 'partition' is {partition!r}; expected one of {PARTITIONS}")
        ingredients = _text_list(record, "ingredients", where)
        instructions = _text_list(record, "instructions", where)
        if partition not in partitions:
            continue
        paths = [image_path(root, partition, i) for i in images_of.get(rid, [])]
        if check_images:
            paths = [p for p in paths if p.is_file()]
        label = int(recipe_classes.get(rid, 0))
        if not 0 <= label < len(class_names):
            raise DataError(f"{where}: class {label} is outside the class table (size {len(class_names)})")
        recipes.append(
            Recipe(rid, record["title"], ingredients, instructions, partition, paths, label, det_of.get(rid))
        )
    return recipes, class_names


# ----------------------------------------------------------------------------------------------- dataset
class RecipeImageDataset(Dataset):
    """(image, tokenised recipe, class, index) pairs of the recipes that have at least one image.

    Training draws one of the recipe's images at random (from torch's RNG, which the engine seeds per step);
    evaluation takes the first image, so two evaluation passes are identical. Images are resized to ``img_size``
    (no random crop at evaluation); the image encoder applies its own normalisation.

    Args:
        recipes: loaded recipes.
        tokenizer: word tokenizer.
        img_size: image side after resizing.
        train: random image choice and horizontal flips.
        max_title: title token limit (START/END included); None keeps titles whole (the paper).
        max_lines: lines kept per ingredient/instruction list (paper: 20).
        max_ingredient_tokens: tokens per ingredient line (paper: 15).
        max_instruction_tokens: tokens per instruction line (paper: 20).
        preload: decode every image once into memory (small sets).
        crop_ratio: images are resized to ``round(img_size / crop_ratio)`` then cropped to ``img_size`` (centre crop
            at evaluation, random crop in training); Recipe1M: 224 / 256. 1.0 resizes straight to ``img_size``.
    """

    def __init__(
        self,
        recipes: Sequence[Recipe],
        tokenizer: WordTokenizer | WordPieceTokenizer,
        img_size: int = 32,
        train: bool = False,
        max_title: int | None = None,
        max_lines: int = 20,
        max_ingredient_tokens: int = 15,
        max_instruction_tokens: int = 20,
        preload: bool = True,
        crop_ratio: float = 1.0,
    ) -> None:
        self.recipes = [r for r in recipes if r.images]
        if not self.recipes:
            raise DataError("no recipe with an image in this split; check layer2.json and the images folder")
        self.img_size = img_size
        self.load_size = max(img_size, round(img_size / crop_ratio))
        self.train = train
        self.tokens = [
            (
                tokenizer.encode(r.title, max_title),
                [tokenizer.encode(t, max_ingredient_tokens) for t in r.ingredients[:max_lines]],
                [tokenizer.encode(t, max_instruction_tokens) for t in r.instructions[:max_lines]],
            )
            for r in self.recipes
        ]
        self.labels = torch.tensor([r.label for r in self.recipes], dtype=torch.long)
        self.longest_title = max(len(title) for title, _, _ in self.tokens)
        self._cache: dict[Path, Tensor] = {}
        if preload:
            for r in self.recipes:
                for p in r.images:
                    self._cache[p] = self._read(p)

    def _read(self, path: Path) -> Tensor:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((self.load_size, self.load_size), Image.BILINEAR)
                return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        except OSError as error:
            raise DataError(f"cannot read image {path} ({error}); remove it from layer2.json or re-download") from None

    def __len__(self) -> int:
        return len(self.recipes)

    def image(self, index: int) -> Tensor:
        """The (float, [0, 1]) image of item ``index`` for this dataset's mode."""
        paths = self.recipes[index].images
        k = int(torch.randint(len(paths), ())) if self.train else 0
        img = self._cache.get(paths[k])
        img = self._read(paths[k]) if img is None else img
        img = img.float() / 255.0
        extra = self.load_size - self.img_size
        if extra:
            if self.train:
                top, left = (int(v) for v in torch.randint(extra + 1, (2,)))
            else:
                top = left = extra // 2
            img = img[:, top : top + self.img_size, left : left + self.img_size]
        if self.train and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img

    def __getitem__(self, index: int) -> tuple[Tensor, Any, Any, Any, int, int]:
        title, ingredients, instructions = self.tokens[index]
        return self.image(index), title, ingredients, instructions, int(self.labels[index]), index


def collate_pairs(items: Sequence[tuple[Tensor, Any, Any, Any, int, int]]) -> tuple[Tensor, ...]:
    """Stack a list of dataset items into (images, title, ingredients, instructions, labels, indices) tensors."""
    images, titles, ingredients, instructions, labels, indices = zip(*items, strict=True)
    tokens = pad_recipes(titles, ingredients, instructions)
    return (
        torch.stack(images),
        tokens.title,
        tokens.ingredients,
        tokens.instructions,
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(indices, dtype=torch.long),
    )


def class_pair_order(labels: Tensor, batch_size: int, background_fraction: float = 0.5, seed: int = 0):
    """Epoch order of batches with ``background_fraction`` background items and the rest as same-class pairs.

    Each batch holds ``n_bg = round(B * background_fraction)`` random background items and ``(B - n_bg) // 2``
    distinct classes with two different items each (padded with random items when B - n_bg is odd or too few
    classes exist), so the semantic triplets always have positives (AdaMine's ``triplet_classif`` sampler).

    Returns:
        ``order(epoch, seed) -> LongTensor`` of ``(N // B) * B`` indices, batch after batch.
    """
    labels = labels.cpu()
    background = (labels == 0).nonzero().squeeze(1)
    by_class = {int(c): (labels == c).nonzero().squeeze(1) for c in labels.unique().tolist() if c != 0}
    by_class = {c: idx for c, idx in by_class.items() if len(idx) >= 2}
    n = len(labels)

    def order(epoch: int, base_seed: int = seed) -> Tensor:
        gen = torch.Generator().manual_seed(derive_seed("tfood-pairs", base_seed, epoch))
        classes = torch.tensor(sorted(by_class))
        batches = []
        for _ in range(n // batch_size):
            n_bg = min(round(batch_size * background_fraction), len(background))
            chosen = [background[torch.randperm(len(background), generator=gen)[:n_bg]]] if n_bg else []
            n_pairs = min((batch_size - n_bg) // 2, len(classes))
            for c in classes[torch.randperm(len(classes), generator=gen)[:n_pairs]].tolist():
                members = by_class[c]
                chosen.append(members[torch.randperm(len(members), generator=gen)[:2]])
            batch = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.long)
            if len(batch) < batch_size:
                batch = torch.cat([batch, torch.randint(n, (batch_size - len(batch),), generator=gen)])
            batches.append(batch)
        return torch.cat(batches)

    return order
