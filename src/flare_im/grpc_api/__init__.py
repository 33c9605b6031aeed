"""The gRPC API (G1): proto/flare/v1, served by the API role on ``grpc_port`` (docs/integration.md)."""
