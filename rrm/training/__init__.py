"""Training: the configuration, the stages (one-step RRM and step 2), the loop with its
optimiser, schedule, checkpoints and progress log, and the two-step orchestration."""
