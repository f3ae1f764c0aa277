"""Camera capture: one spawned process per camera, bounded drop-oldest channels, supervision and restarts."""
