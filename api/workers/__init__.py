"""Background work that must happen once: escalation steps, the SMS outbox, subscribe messages."""
