"""KerasHub-style task models: `from_preset`, `fit`, `predict`, `save_to_preset`, `export`."""

__all__ = ["base", "catalogue_recognizer", "image_classifier", "prompted_classifier", "question_answering", "retrieval", "text_classifier", "text_generator", "token_classifier"]
