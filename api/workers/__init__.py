"""Background work that must happen once: escalation steps and the SMS outbox."""
