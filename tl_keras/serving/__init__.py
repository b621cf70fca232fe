"""TF Serving clients (gRPC, REST) and `serve-local`, a stand-in server for development."""

__all__ = ["clients", "inference", "kit", "local_server", "metrics", "model_repository", "requests", "rest_json"]
