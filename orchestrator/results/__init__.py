"""A sweep's results: one results model, Table 1, figures, the console summary, the report."""
