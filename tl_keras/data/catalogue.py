"""A product catalogue and image lists labelled against it, in the Grocery
Store dataset's layout (Klasson et al., WACV 2019).

- `classes.csv`: one row a product class: `Class Name (str)`, `Class ID
  (int)`, `Coarse Class Name (str)`, `Coarse Class ID (int)`, `Iconic Image
  Path (str)`, `Product Description Path (str)` (paths from the folder of
  the CSV, with or without a leading `/`).
- an image list (`train.txt`): `path, fine_class_id, coarse_class_id` a
  line, paths from the list's folder.

Every class has a coarse class (`Granny-Smith` is an `Apple`), a catalogue
image and a description, as a shop's product page has them.

Example:
>>> catalogue = read_catalogue("grocery_store/classes.csv")
>>> rows = read_image_list("grocery_store/train.txt", catalogue)
>>> rows.labels[0], catalogue.coarse_of[rows.labels[0]]
('Golden-Delicious', 'Apple')
"""

import dataclasses
import pathlib

from tl_keras.data.texts import DataError, LabelledTexts, csv_records, decode_utf8

CATALOGUE_COLUMNS = ("Class Name (str)", "Class ID (int)", "Coarse Class Name (str)", "Coarse Class ID (int)",
                     "Iconic Image Path (str)", "Product Description Path (str)")


@dataclasses.dataclass(frozen=True)
class CatalogueEntry:
    """One product class: its name, coarse class (name and id), catalogue
    image file and description text."""

    name: str
    coarse: str
    coarse_id: int
    image: str
    description: str


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """The product classes by id, in id order."""

    entries: dict  # class id -> CatalogueEntry

    @property
    def names(self):
        return [entry.name for entry in self.entries.values()]

    @property
    def coarse_of(self):
        """Each class name's coarse class name."""
        return {entry.name: entry.coarse for entry in self.entries.values()}

    def subset(self, names):
        """The entries of the classes called `names`, in that order."""
        by_name = {entry.name: entry for entry in self.entries.values()}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise ValueError(f"Not in the catalogue: {missing[:5]!r}.")
        return [by_name[name] for name in names]


def _integer(value, origin, column):
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataError(f"{origin}: column {column!r} must be an integer, received {value!r}.") from None


def read_catalogue(path):
    """Reads a `classes.csv` catalogue; every image and description file it
    names must exist.

    Raises:
        DataError: naming the file, line and value, for a missing column, a
            non-integer or repeated id, a missing image or description file.

    Example:
    >>> read_catalogue("grocery_store/classes.csv").entries[1].name
    'Granny-Smith'
    """
    path = pathlib.Path(path)
    entries = {}
    for origin, record in csv_records(path, CATALOGUE_COLUMNS):
        identifier = _integer(record["Class ID (int)"], origin, "Class ID (int)")
        if identifier in entries:
            raise DataError(f"{origin}: class id {identifier} appears twice.")
        files = {}
        for column in ("Iconic Image Path (str)", "Product Description Path (str)"):
            file = path.parent / record[column].strip().lstrip("/")
            if not file.is_file():
                raise DataError(f"{origin}: no such file {file} (column {column!r}).")
            files[column] = file
        entries[identifier] = CatalogueEntry(
            record["Class Name (str)"].strip(), record["Coarse Class Name (str)"].strip(),
            _integer(record["Coarse Class ID (int)"], origin, "Coarse Class ID (int)"), str(files["Iconic Image Path (str)"]), decode_utf8(files["Product Description Path (str)"]).strip())
    if not entries:
        raise DataError(f"{path}: no classes.")
    return Catalogue(dict(sorted(entries.items())))


def read_image_list(path, catalogue=None):
    """Reads an image list (`path, fine_class_id, coarse_class_id` lines)
    into a `LabelledTexts` of image paths labelled with class names from
    `catalogue` (by default the `classes.csv` beside the list).

    Raises:
        DataError: naming the file, line and value, for a line without three
            fields, an id the catalogue does not have, or a coarse id that
            is not the class's.

    Example:
    >>> rows = read_image_list("grocery_store/val.txt")
    """
    path = pathlib.Path(path)
    catalogue = catalogue or read_catalogue(path.parent / "classes.csv")
    rows = LabelledTexts([], [], [])
    for number, line in enumerate(decode_utf8(path).split("\n"), start=1):
        if not line.strip():
            continue
        origin = f"{path}:{number}"
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 3:
            raise DataError(f"{origin}: expected `path, fine_class_id, coarse_class_id`, received {line[:80]!r}.")
        fine = _integer(fields[1], origin, "fine_class_id")
        if fine not in catalogue.entries:
            raise DataError(f"{origin}: class id {fine} is not in the catalogue (ids "
                            f"{min(catalogue.entries)}-{max(catalogue.entries)}).")
        coarse = _integer(fields[2], origin, "coarse_class_id")
        if coarse != catalogue.entries[fine].coarse_id:
            raise DataError(f"{origin}: coarse class id {coarse} is not that of class {fine} "
                            f"({catalogue.entries[fine].name}: {catalogue.entries[fine].coarse_id}).")
        rows.texts.append(str(path.parent / fields[0]))
        rows.labels.append(catalogue.entries[fine].name)
        rows.origins.append(origin)
    if not rows.texts:
        raise DataError(f"{path}: the list holds no images.")
    return rows
