"""What trials and sweeps cost: per-trial accounting, sweep totals and savings, dry-run estimates."""
