"""The 7-class label maps of the continual UDA benchmark (GTA5 -> Cityscapes -> IDD -> Mapillary), table-driven.

Seven super-classes (the Cityscapes *categories*): 0 flat, 1 construction, 2 object, 3 nature, 4 sky, 5 human,
6 vehicle; 255 is ignored. Two mappings:

* ``"consistent"`` (default): every dataset class goes to the Cityscapes category of its Cityscapes equivalent
  (GTA5 and Cityscapes share the Cityscapes ``labelIds``; IDD classes through the ``csId`` column of the IDD
  toolkit's ``anue_labels.py``; Mapillary names through :data:`MAPILLARY_TO_CITYSCAPES`), so a class means the same
  thing in every domain. IDD/Mapillary classes without a Cityscapes equivalent keep the official choice, except the
  few listed in the method README.
* ``"muhdi_official"``: the tables of the official MuHDi code (valeoai/MuHDi@3eb76db: ``gta5.py`` hard-coded dict,
  ``cityscapes_list/info7class.json``, ``idd_list/info7class.json``, ``mapillary.py`` name dict), which disagree with
  each other (terrain is flat in GTA5 and Mapillary but nature in Cityscapes, Mapillary keeps parking / rail track /
  guard rail / bridge / tunnel that Cityscapes and GTA5 ignore, ...). Use it to compare with the paper's numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from frugalvision.errors import ConfigError

__all__ = [
    "CITYSCAPES_LABELS",
    "DATASETS",
    "IDD_LABELS",
    "IGNORE",
    "LABEL_MAPS",
    "MAPILLARY_CLASSES",
    "MAPILLARY_TO_CITYSCAPES",
    "SUPER_CLASSES",
    "label_lookup",
    "label_table",
    "mapillary_table",
]

LabelMapName = Literal["consistent", "muhdi_official"]
LABEL_MAPS = ("consistent", "muhdi_official")
DATASETS = ("gta5", "cityscapes", "idd", "mapillary")
SUPER_CLASSES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
IGNORE = 255
_CLASS = {name: index for index, name in enumerate(SUPER_CLASSES)} | {"void": IGNORE}

#: Cityscapes ``labelIds``: id -> (name, category); GTA5 labels use the same ids
CITYSCAPES_LABELS: dict[int, tuple[str, str]] = {
    0: ("unlabeled", "void"), 1: ("ego vehicle", "void"), 2: ("rectification border", "void"),
    3: ("out of roi", "void"), 4: ("static", "void"), 5: ("dynamic", "void"), 6: ("ground", "void"),
    7: ("road", "flat"), 8: ("sidewalk", "flat"), 9: ("parking", "flat"), 10: ("rail track", "flat"),
    11: ("building", "construction"), 12: ("wall", "construction"), 13: ("fence", "construction"),
    14: ("guard rail", "construction"), 15: ("bridge", "construction"), 16: ("tunnel", "construction"),
    17: ("pole", "object"), 18: ("polegroup", "object"), 19: ("traffic light", "object"),
    20: ("traffic sign", "object"), 21: ("vegetation", "nature"), 22: ("terrain", "nature"), 23: ("sky", "sky"),
    24: ("person", "human"), 25: ("rider", "human"), 26: ("car", "vehicle"), 27: ("truck", "vehicle"),
    28: ("bus", "vehicle"), 29: ("caravan", "vehicle"), 30: ("trailer", "vehicle"), 31: ("train", "vehicle"),
    32: ("motorcycle", "vehicle"), 33: ("bicycle", "vehicle"),
}  # fmt: skip
_CITYSCAPES_ID = {name: index for index, (name, _) in CITYSCAPES_LABELS.items()}

#: IDD toolkit (AutoNUE ``anue_labels.py``) ``id`` level: id -> (name, Cityscapes equivalent or our category)
IDD_LABELS: dict[int, tuple[str, str]] = {
    0: ("road", "road"), 1: ("parking", "parking"), 2: ("drivable fallback", "flat"), 3: ("sidewalk", "sidewalk"),
    4: ("rail track", "rail track"), 5: ("non-drivable fallback", "terrain"), 6: ("person", "person"),
    7: ("animal", "void"), 8: ("rider", "rider"), 9: ("motorcycle", "motorcycle"), 10: ("bicycle", "bicycle"),
    11: ("autorickshaw", "vehicle"), 12: ("car", "car"), 13: ("truck", "truck"), 14: ("bus", "bus"),
    15: ("caravan", "caravan"), 16: ("trailer", "trailer"), 17: ("train", "train"),
    18: ("vehicle fallback", "vehicle"), 19: ("curb", "sidewalk"), 20: ("wall", "wall"), 21: ("fence", "fence"),
    22: ("guard rail", "guard rail"), 23: ("billboard", "void"), 24: ("traffic sign", "traffic sign"),
    25: ("traffic light", "traffic light"), 26: ("pole", "pole"), 27: ("polegroup", "polegroup"),
    28: ("obs-str-bar-fallback", "void"), 29: ("building", "building"), 30: ("bridge", "bridge"),
    31: ("tunnel", "tunnel"), 32: ("vegetation", "vegetation"), 33: ("sky", "sky"),
    34: ("fallback background", "void"), 35: ("unlabeled", "unlabeled"), 36: ("ego vehicle", "ego vehicle"),
    37: ("rectification border", "rectification border"), 38: ("out of roi", "out of roi"),
    39: ("license plate", "vehicle"),
}  # fmt: skip

#: Mapillary Vistas v1.2 ``config.json`` class names (66, in file order)
MAPILLARY_CLASSES = (
    "Bird", "Ground Animal", "Curb", "Fence", "Guard Rail", "Barrier", "Wall", "Bike Lane", "Crosswalk - Plain",
    "Curb Cut", "Parking", "Pedestrian Area", "Rail Track", "Road", "Service Lane", "Sidewalk", "Bridge", "Building",
    "Tunnel", "Person", "Bicyclist", "Motorcyclist", "Other Rider", "Lane Marking - Crosswalk",
    "Lane Marking - General", "Mountain", "Sand", "Sky", "Snow", "Terrain", "Vegetation", "Water", "Banner", "Bench",
    "Bike Rack", "Billboard", "Catch Basin", "CCTV Camera", "Fire Hydrant", "Junction Box", "Mailbox", "Manhole",
    "Phone Booth", "Pothole", "Street Light", "Pole", "Traffic Sign Frame", "Utility Pole", "Traffic Light",
    "Traffic Sign (Back)", "Traffic Sign (Front)", "Trash Can", "Bicycle", "Boat", "Bus", "Car", "Caravan",
    "Motorcycle", "On Rails", "Other Vehicle", "Trailer", "Truck", "Wheeled Slow", "Car Mount", "Ego Vehicle",
    "Unlabeled",
)  # fmt: skip

#: Mapillary name (lower case) -> Cityscapes class name it is annotated as, or a category when none exists
MAPILLARY_TO_CITYSCAPES: dict[str, str] = {
    "bird": "void", "ground animal": "void", "curb": "sidewalk", "fence": "fence", "guard rail": "guard rail",
    "barrier": "construction", "wall": "wall", "bike lane": "road", "crosswalk - plain": "road",
    "curb cut": "sidewalk", "parking": "parking", "pedestrian area": "sidewalk", "rail track": "rail track",
    "road": "road", "service lane": "road", "sidewalk": "sidewalk", "bridge": "bridge", "building": "building",
    "tunnel": "tunnel", "person": "person", "bicyclist": "rider", "motorcyclist": "rider", "other rider": "rider",
    "lane marking - crosswalk": "road", "lane marking - general": "road", "mountain": "void", "sand": "terrain",
    "sky": "sky", "snow": "void", "terrain": "terrain", "vegetation": "vegetation", "water": "void",
    "banner": "void", "bench": "void", "bike rack": "void", "billboard": "void", "catch basin": "void",
    "cctv camera": "void", "fire hydrant": "void", "junction box": "void", "mailbox": "void", "manhole": "void",
    "phone booth": "void", "pothole": "road", "street light": "object", "pole": "pole",
    "traffic sign frame": "object", "utility pole": "pole", "traffic light": "traffic light",
    "traffic sign (back)": "static", "traffic sign (front)": "traffic sign", "trash can": "void",
    "bicycle": "bicycle", "boat": "vehicle", "bus": "bus", "car": "car", "caravan": "caravan",
    "motorcycle": "motorcycle", "on rails": "train", "other vehicle": "vehicle", "trailer": "trailer",
    "truck": "truck", "wheeled slow": "vehicle", "car mount": "void", "ego vehicle": "ego vehicle",
    "unlabeled": "unlabeled",
}  # fmt: skip

# ------------------------------------------------------------------------------------------------ official tables
#: ``gta5.py`` (7 classes): the dict the loader uses (it ignores ``gta5_list/info7class.json``); other ids -> 255
_OFFICIAL_GTA5 = {7: 0, 8: 0, 11: 1, 12: 1, 13: 1, 17: 2, 19: 2, 20: 2, 21: 3, 22: 0, 23: 4, 24: 5, 25: 5, 26: 6,
                  27: 6, 28: 6, 31: 6, 32: 6, 33: 6}  # fmt: skip
#: ``cityscapes_list/info7class.json`` ``label2train`` (the non-255 entries)
_OFFICIAL_CITYSCAPES = {7: 0, 8: 0, 11: 1, 12: 1, 13: 1, 17: 2, 19: 2, 20: 2, 21: 3, 22: 3, 23: 4, 24: 5, 25: 5,
                        26: 6, 27: 6, 28: 6, 29: 6, 30: 6, 31: 6, 32: 6, 33: 6}  # fmt: skip
#: ``idd_list/info7class.json`` ``label2train`` (the non-255 entries)
_OFFICIAL_IDD = {0: 0, 2: 0, 3: 0, 6: 5, 8: 5, 9: 6, 10: 6, 11: 6, 12: 6, 13: 6, 14: 6, 15: 6, 16: 6, 17: 6, 18: 6,
                 19: 1, 20: 1, 21: 1, 23: 2, 24: 2, 25: 2, 26: 2, 29: 1, 32: 3, 33: 4}  # fmt: skip
#: ``mapillary.py`` ``classes_mappings_mapillary_to_cityscapes``: the names that are not 'other'
_OFFICIAL_MAPILLARY = {
    "curb": "construction", "fence": "construction", "guard rail": "construction", "barrier": "construction",
    "wall": "construction", "bike lane": "flat", "crosswalk - plain": "flat", "curb cut": "flat", "parking": "flat",
    "pedestrian area": "flat", "rail track": "flat", "road": "flat", "service lane": "flat", "sidewalk": "flat",
    "bridge": "construction", "building": "construction", "tunnel": "construction", "person": "human",
    "bicyclist": "human", "motorcyclist": "human", "other rider": "human", "lane marking - crosswalk": "flat",
    "lane marking - general": "flat", "sky": "sky", "terrain": "flat", "vegetation": "nature", "pothole": "object",
    "street light": "object", "pole": "object", "traffic sign frame": "object", "utility pole": "object",
    "traffic light": "object", "traffic sign (back)": "object", "traffic sign (front)": "object",
    "bicycle": "vehicle", "boat": "vehicle", "bus": "vehicle", "car": "vehicle", "caravan": "vehicle",
    "motorcycle": "vehicle", "on rails": "vehicle", "other vehicle": "vehicle", "trailer": "vehicle",
    "truck": "vehicle", "wheeled slow": "vehicle",
}  # fmt: skip


def _category(equivalent: str) -> int:
    """Super-class of a Cityscapes class name, or of a category name given directly."""
    if equivalent in _CLASS:
        return _CLASS[equivalent]
    if equivalent not in _CITYSCAPES_ID:
        raise KeyError(f"{equivalent!r} is neither a Cityscapes class nor a category")
    return _CLASS[CITYSCAPES_LABELS[_CITYSCAPES_ID[equivalent]][1]]


def _check_mapping(mapping: str) -> None:
    if mapping not in LABEL_MAPS:
        raise ConfigError(f"label_map={mapping!r} is invalid; use 'consistent' or 'muhdi_official'")


def label_table(dataset: str, mapping: LabelMapName = "consistent") -> dict[int, int]:
    """Raw label id -> 7-class id (or 255) for GTA5, Cityscapes or IDD; ids not listed map to 255.

    Raises:
        ConfigError: unknown dataset or mapping (Mapillary is name-based: use :func:`mapillary_table`).
    """
    _check_mapping(mapping)
    if mapping == "muhdi_official":
        tables = {"gta5": _OFFICIAL_GTA5, "cityscapes": _OFFICIAL_CITYSCAPES, "idd": _OFFICIAL_IDD}
        if dataset not in tables:
            raise ConfigError(f"dataset={dataset!r} has no id table; use gta5, cityscapes or idd")
        return dict(tables[dataset])
    if dataset in ("gta5", "cityscapes"):
        return {i: _CLASS[category] for i, (_, category) in CITYSCAPES_LABELS.items() if category != "void"}
    if dataset == "idd":
        table = {i: _category(equivalent) for i, (_, equivalent) in IDD_LABELS.items()}
        return {i: c for i, c in table.items() if c != IGNORE}
    raise ConfigError(f"dataset={dataset!r} has no id table; use gta5, cityscapes or idd (mapillary: by names)")


def mapillary_table(names: Sequence[str] = MAPILLARY_CLASSES, mapping: LabelMapName = "consistent") -> dict[int, int]:
    """Mapillary label index -> 7-class id, from the class names of the dataset's ``config.json`` (in file order).

    Raises:
        ConfigError: a name this table does not know.
    """
    _check_mapping(mapping)
    table = {}
    for index, name in enumerate(names):
        key = name.lower()
        if key not in MAPILLARY_TO_CITYSCAPES:
            raise ConfigError(f"Mapillary class {name!r} is unknown; this loader supports the v1.2 config.json")
        if mapping == "muhdi_official":
            table[index] = _CLASS[_OFFICIAL_MAPILLARY[key]] if key in _OFFICIAL_MAPILLARY else IGNORE
        else:
            table[index] = _category(MAPILLARY_TO_CITYSCAPES[key])
    return {i: c for i, c in table.items() if c != IGNORE}


def label_lookup(table: Mapping[int, int], size: int = 256) -> np.ndarray:
    """A ``(size,)`` uint8 lookup array: ``lut[raw id] = class``, 255 for every id the table does not list."""
    lut = np.full(size, IGNORE, np.uint8)
    for raw, target in table.items():
        if 0 <= raw < size:
            lut[raw] = target
    return lut
