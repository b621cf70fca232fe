"""A synthetic shop with planted structure, for tests and development.

Each item belongs to one topic and its text is made of that topic's words
("steel kettle and whisk, kitchen"). Each user prefers one or two topics and
mostly interacts with their items, popular items more often. Some items are
new: they occur only in users' last interactions, so a time-ordered split
sees them only at test time (cold start). A text tower can place a new item
by its words; an id-only model knows nothing about it.
"""

import csv
import dataclasses
import pathlib

import numpy as np

TOPICS = {
    "kitchen": ["kettle", "skillet", "whisk", "ladle", "teapot", "colander", "spatula", "saucepan"],
    "garden": ["shovel", "hose", "rake", "planter", "trowel", "shears", "wheelbarrow", "sprinkler"],
    "camping": ["tent", "lantern", "sleeping bag", "compass", "backpack", "canteen", "hammock", "stove"],
    "office": ["stapler", "notebook", "binder", "desk lamp", "pen", "folder", "whiteboard", "calculator"],
    "fitness": ["dumbbell", "yoga mat", "kettlebell", "jump rope", "treadmill", "resistance band", "bench", "foam roller"],
    "baby": ["stroller", "crib", "pacifier", "diaper bag", "bib", "rattle", "onesie", "high chair"],
    "music": ["guitar", "ukulele", "drum", "violin", "keyboard", "microphone", "metronome", "harmonica"],
    "pets": ["leash", "collar", "litter box", "dog bed", "cat tree", "chew toy", "aquarium", "bird cage"],
}
ADJECTIVES = ["steel", "compact", "classic", "deluxe", "portable", "wooden", "large", "small", "premium", "basic"]
REGIONS = ["north", "south", "east", "west"]


@dataclasses.dataclass
class SyntheticShop:
    """Rows ready to write: items `(item_id, text)`, interactions
    `(user_id, item_id, timestamp)`, users `(user_id, region)`, plus the
    planted truth (each item's topic, each user's topics, the new items)."""

    items: list
    interactions: list
    users: list
    item_topics: dict
    user_topics: dict
    new_items: set

    def write(self, directory):
        """Writes `items.csv`, `interactions.csv` and `users.csv` to
        `directory` and returns their paths in that order."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tables = {
            "items.csv": (["item_id", "text"], self.items),
            "interactions.csv": (["user_id", "item_id", "timestamp"], self.interactions),
            "users.csv": (["user_id", "region"], self.users),
        }
        paths = []
        for name, (header, rows) in tables.items():
            with open(directory / name, "w", newline="", encoding="utf-8") as file:
                writer = csv.writer(file)
                writer.writerow(header)
                writer.writerows(rows)
            paths.append(directory / name)
        return paths


def make_synthetic_shop(num_users=300, items_per_topic=30, new_items_per_topic=6, interactions_per_user=(8, 14),
                        holdout=2, new_item_rate=0.5, focus=0.9, seed=0):
    """Generates a `SyntheticShop`.

    Args:
        num_users: users; each prefers one topic, a third of them two.
        items_per_topic: established items per topic.
        new_items_per_topic: items per topic that occur only in users' last
            `holdout` interactions.
        interactions_per_user: (min, max) interactions per user.
        holdout: how many of each user's last interactions may be new items.
        new_item_rate: chance that one of those last interactions is a new
            item.
        focus: chance that an interaction is within the user's topics.
        seed: the random seed.

    Example:
    >>> shop = make_synthetic_shop(num_users=50, seed=1)
    >>> items_csv, interactions_csv, users_csv = shop.write("data/shop")
    """
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    items, item_topics, new_items = [], {}, set()
    established = {topic: [] for topic in topics}
    fresh = {topic: [] for topic in topics}
    seen_texts = set()
    for topic in topics:
        for number in range(items_per_topic + new_items_per_topic):
            while True:
                first, second = rng.choice(TOPICS[topic], size=2, replace=False)
                text = f"{rng.choice(ADJECTIVES)} {first} and {second}, {topic}"
                if text not in seen_texts:
                    break
            seen_texts.add(text)
            item_id = f"{topic[:3]}-{number:03d}"
            items.append((item_id, text))
            item_topics[item_id] = topic
            (established if number < items_per_topic else fresh)[topic].append(item_id)
            if number >= items_per_topic:
                new_items.add(item_id)
    # Zipf-like popularity within each topic, so a popularity ranking is a
    # fair baseline on established items.
    popularity = 1.0 / np.arange(1, items_per_topic + 1) ** 0.8
    popularity /= popularity.sum()

    interactions, users, user_topics = [], [], {}
    clock = 0
    for number in range(num_users):
        user_id = f"u{number:04d}"
        chosen = list(rng.choice(topics, size=2 if rng.random() < 1 / 3 else 1, replace=False))
        user_topics[user_id] = chosen
        region = REGIONS[topics.index(chosen[0]) % len(REGIONS)] if rng.random() < 0.7 else rng.choice(REGIONS)
        users.append((user_id, region))
        count = int(rng.integers(interactions_per_user[0], interactions_per_user[1] + 1))
        for position in range(count):
            topic = rng.choice(chosen) if rng.random() < focus else rng.choice(topics)
            late = position >= count - holdout
            if late and fresh[topic] and rng.random() < new_item_rate:
                item_id = rng.choice(fresh[topic])
            else:
                item_id = established[topic][rng.choice(items_per_topic, p=popularity)]
            clock += 1
            interactions.append((user_id, str(item_id), clock))
    return SyntheticShop(items, interactions, users, item_topics, user_topics, new_items)
