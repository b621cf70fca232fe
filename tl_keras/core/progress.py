"""Progress bars that say what they do."""

import sys


def progress_bar(total, description, unit="item", verbose=1):
    """A Keras `Progbar` over `total` units, preceded by one line naming the
    work, e.g. "tokenising 800 texts". Silent when `verbose` is 0.

    Example:
    >>> bar = progress_bar(800, "tokenising", "text")
    tokenising 800 texts
    """
    import keras  # Here, not at the top: `core` imports no TensorFlow.

    if verbose:
        count = "the" if total is None else total  # A stream's length is known at its end.
        print(f"{description} {count} {unit}{'' if total == 1 else 's'}", file=sys.stdout, flush=True)
    return keras.utils.Progbar(total, verbose=verbose, unit_name=unit)
