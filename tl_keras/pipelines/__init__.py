"""Jobs larger than one process, on Apache Beam (`pip install tl_keras[beam]`): scoring files with an exported SavedModel, and embedding catalogues into item indexes."""

__all__ = ["batch_predict", "catalogue_index"]
