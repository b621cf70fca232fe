"""MovieLens-100k (GroupLens) as the recommendation job's three CSV files.

The release's licence forbids redistribution, so nothing here ships its
data: `convert_movielens` reads a local copy of the `ml-100k/` folder
(`u.data`, `u.item`, `u.user`) and writes `items.csv` (`item_id,text` with
the text "Title (year). Genre, Genre"), `interactions.csv`
(`user_id,item_id,timestamp,rating`) and `users.csv` (`user_id,gender,
occupation,age_band`). Every malformed line is a `DataError` naming the file,
line and value.
"""

import csv
import io
import pathlib

from tl_keras.core.files import write_atomically
from tl_keras.data.texts import DataError

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
AGE_BANDS = ((18, "under 18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"))
# The official release's sizes in bytes: a copy of another size is not it.
RELEASE_SIZES = {"u.data": 1979173, "u.item": 236344, "u.user": 22628}


def _lines(path, separator, fields):
    # The release is Latin-1 (accented titles); every line has `fields` fields.
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        values = line.split(separator)
        if len(values) != fields:
            raise DataError(f"{path}:{number}: expected {fields} fields separated by {separator!r}, "
                            f"received {len(values)}: {line[:80]!r}.")
        yield f"{path}:{number}", values


def _whole(value, origin, column):
    if not value.strip().isdigit():
        raise DataError(f"{origin}: {column} must be a whole number, received {value!r}.")
    return int(value)


def item_text(title, flags, origin):
    """"Toy Story (1995). Animation, Children's, Comedy" from a title and
    the 19 genre flags of a `u.item` line."""
    if any(flag not in ("0", "1") for flag in flags):
        raise DataError(f"{origin}: genre flags must be 0 or 1, received {flags!r}.")
    genres = [genre for genre, flag in zip(GENRES, flags) if flag == "1" and genre != "unknown"]
    return f"{title.strip()}. {', '.join(genres)}" if genres else title.strip()


def age_band(age):
    return next((band for limit, band in AGE_BANDS if age < limit), "56+")


def convert_movielens(folder, output_dir, check_sizes=True):
    """Writes `items.csv`, `interactions.csv` and `users.csv` from an
    `ml-100k/` folder.

    Args:
        folder: the folder holding `u.data`, `u.item` and `u.user`.
        output_dir: where the three CSV files go (created).
        check_sizes: refuse files whose size differs from the official
            release's (`RELEASE_SIZES`).

    Returns:
        `(items_path, interactions_path, users_path)`.

    Example:
    >>> items, interactions, users = convert_movielens("ml-100k", "runs/movielens-data")
    """
    folder, output_dir = pathlib.Path(folder), pathlib.Path(output_dir)
    for name, size in RELEASE_SIZES.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: no such file; `folder` must be MovieLens-100k's ml-100k/ folder.")
        if check_sizes and path.stat().st_size != size:
            raise DataError(f"{path}: {path.stat().st_size} bytes, but the official release's is {size}; "
                            "this is not the GroupLens ml-100k file (check_sizes=False to use it anyway).")
    items = [(_whole(values[0], origin, "movie id"), item_text(values[1], values[5:], origin))
             for origin, values in _lines(folder / "u.item", "|", 24)]
    known = {item_id for item_id, _ in items}
    interactions = []
    for origin, values in _lines(folder / "u.data", "\t", 4):
        user, item, rating, timestamp = (_whole(v, origin, c) for v, c in
                                         zip(values, ("user id", "item id", "rating", "timestamp")))
        if item not in known:
            raise DataError(f"{origin}: item id {item} is not in u.item.")
        interactions.append((user, item, timestamp, rating))
    users = [(_whole(values[0], origin, "user id"), values[2], values[3], age_band(_whole(values[1], origin, "age")))
             for origin, values in _lines(folder / "u.user", "|", 5)]
    output_dir.mkdir(parents=True, exist_ok=True)
    tables = {"items.csv": (("item_id", "text"), items),
              "interactions.csv": (("user_id", "item_id", "timestamp", "rating"), interactions),
              "users.csv": (("user_id", "gender", "occupation", "age_band"), users)}
    paths = []
    for name, (header, rows) in tables.items():
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        paths.append(write_atomically(output_dir / name, text.getvalue()))
    return tuple(paths)
