"""Benchmark data: loaders for the official layouts and the Hugging Face parquet export,
validation, the paper's prompts, prepared Parquet, embedded synthetic benchmarks, images.

A trial never reads a raw tree: `prepare.ensure_prepared` validates a source once and writes
one Parquet file per split (image bytes and the exact prompt text inside) plus a manifest;
`examples.load_examples` turns a prepared split into decoded `Example`s.
"""
