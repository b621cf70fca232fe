"""TF Serving clients (gRPC, REST), `serve-local` (a stand-in server for development) and the checks of the files written for TF Serving against its own protos."""

__all__ = ["clients", "inference", "kit", "local_server", "metrics", "model_repository", "requests", "rest_json", "session_bundle",
           "tf_serving_files"]
