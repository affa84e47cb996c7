"""Models: the protocol, the registry, the reference models and (later) real adapters."""
