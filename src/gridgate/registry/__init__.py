"""Service center (服务中心): where business systems register instances and gateways find them.

The state lives behind :class:`~gridgate.registry.interfaces.RegistryStore`, with an
in-process implementation (:mod:`gridgate.registry.memory`) and a Redis one
(:mod:`gridgate.registry.redis_store`).
"""
