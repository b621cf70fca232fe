"""Reading data and turning it into arrays: labelled texts, token ids, images, interactions."""

__all__ = ["catalogue", "images", "interactions", "item_index", "movielens", "records", "sample_images", "spans", "squad", "streams", "synthetic_shop", "texts", "token_tags", "tokens"]
