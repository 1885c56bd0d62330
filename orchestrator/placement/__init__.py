"""Where each trial runs: GPU types, node types and prices, memory-aware packing, Ray resources."""
