"""Whole jobs from one config: read, train, evaluate, report, export."""

__all__ = ["common", "configs", "continued_pretraining", "distillation", "domain_adaptation", "image_classification",
           "model_fusion", "question_answering", "recommendation", "text_classification", "text_generation"]
