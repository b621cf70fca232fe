"""SavedModels in TF Serving"s layout: text, image and retrieval signatures, atomic versions."""

__all__ = ["catalogue", "generation", "image", "question_answering", "retrieval", "saved_model", "text", "token_classification"]
