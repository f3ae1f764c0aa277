"""The verdict bus: the wire format, the publisher, and the tail and proxy clients."""
