"""GPU power-cap profiles: fitting them from sweeps and from the fleet's own measurements."""
