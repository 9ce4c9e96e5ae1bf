"""Generated gRPC stubs (python protos/generate.py). Do not edit."""
