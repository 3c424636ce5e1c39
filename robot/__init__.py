"""Robot side of sam2grasp: protocols, drivers, the safety layer and the simulated cell (`robot.sim`)."""
