"""What-if planning: replay recorded carbon intensity and job traces under competing policies.

See docs/whatif.md. Layers: ``greencpn.sources.replay`` (forecasts without look-ahead) →
``greencpn.whatif.fleet`` (simulated fleet behind the fake actuators) → ``engine`` (the slot
loop and the accountant) → ``metrics``; policies are plug-ins in ``greencpn.whatif.policies``.
"""
