"""MLflow tracking of a sweep: the experiment, the parent run, one child run per trial."""
