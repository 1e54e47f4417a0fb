"""Every SQL statement of the service, named, one small typed function each, by area."""
