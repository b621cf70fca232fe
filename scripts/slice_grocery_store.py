"""Writes `data/grocery_slice/`: a slice of the Grocery Store dataset (Klasson
et al., WACV 2019; MIT licence) for the image recipe's default run.

Eight classes in three coarse groups (three apples, two melons, two milks,
bananas). Training: 12 photos a class from the official train split, evenly
spaced over each class's list (its photos come in runs of near-identical
shots). The official val split's photos of these classes are divided, in
list order per class, into `val.txt` (the first three) and `test.txt` (the
rest), so validation and test are photos no training run saw. Files are
copied unchanged with the dataset's catalogue rows, catalogue images and
descriptions, and its LICENSE.

    python scripts/slice_grocery_store.py ../shared/data/grocery_store data/grocery_slice
"""

import argparse
import csv
import pathlib
import shutil

CLASSES = ("Golden-Delicious", "Granny-Smith", "Pink-Lady", "Banana", "Cantaloupe", "Galia-Melon",
           "Garant-Ecological-Medium-Fat-Milk", "Garant-Ecological-Standard-Milk")
TRAIN_PER_CLASS, VALIDATION_PER_CLASS = 12, 3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="the grocery_store/ folder (classes.csv, train.txt, val.txt)")
    parser.add_argument("target", help="a new folder for the slice")
    args = parser.parse_args()
    source, target = pathlib.Path(args.source), pathlib.Path(args.target)
    target.mkdir(parents=True)
    with open(source / "classes.csv", newline="") as file:
        reader = csv.DictReader(file)
        fields, rows = reader.fieldnames, [row for row in reader if row["Class Name (str)"] in CLASSES]
    ids = {row["Class ID (int)"] for row in rows}

    def copy(relative):
        destination = target / relative.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative.lstrip("/"), destination)

    for row in rows:
        copy(row["Iconic Image Path (str)"])
        copy(row["Product Description Path (str)"])
    with open(target / "classes.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fields)
        writer.writeheader()
        writer.writerows(rows)

    def by_class(name):
        lines = {}
        for line in (source / name).read_text().splitlines():
            fine = line.split(",")[1].strip()
            if fine in ids:
                lines.setdefault(fine, []).append(line)
        return lines

    chosen = {"train.txt": [], "val.txt": [], "test.txt": []}
    for lines in by_class("train.txt").values():
        step = len(lines) / TRAIN_PER_CLASS
        chosen["train.txt"] += [lines[int(i * step)] for i in range(TRAIN_PER_CLASS)]
    for lines in by_class("val.txt").values():
        chosen["val.txt"] += lines[:VALIDATION_PER_CLASS]
        chosen["test.txt"] += lines[VALIDATION_PER_CLASS:]
    for name, lines in chosen.items():
        for line in lines:
            copy(line.split(",")[0].strip())
        (target / name).write_text("".join(line + "\n" for line in lines))
    shutil.copyfile(source / "LICENSE", target / "LICENSE")
    print({name: len(lines) for name, lines in chosen.items()})


if __name__ == "__main__":
    main()
