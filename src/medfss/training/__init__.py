"""Training: one Lightning loop for every episodic model, presets and schedules."""
