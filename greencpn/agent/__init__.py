"""greencpn's node agent: an authenticated HTTP service that actuates one node.

* :mod:`greencpn.agent.auth` — HMAC-SHA256 request signing, key files, replay protection;
* :mod:`greencpn.agent.server` — the agent (``greencpn agent``);
* :mod:`greencpn.agent.client` — the controller's side (timeouts, retries, typed errors);
* :class:`greencpn.actuate.agent_hook.AgentNodeHook` — a NodePowerHook over many agents.
"""
