"""TF Serving clients (gRPC, REST) and `serve-local`, a stand-in server for development."""

__all__ = ["clients", "local_server", "rest_json"]
