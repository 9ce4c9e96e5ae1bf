"""A district of classrooms: each room shares the sums of what it was taught, and every room
receives what any room was taught, exactly (docs/district.md). Torch-free: the Flower apps import
only NumPy, gRPC and the daemon's client stubs."""
