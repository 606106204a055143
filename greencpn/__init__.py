"""greencpn: carbon-aware planning for multi-site GPU/CPU fleets."""

__version__ = "0.1.0"
