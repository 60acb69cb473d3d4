"""Developer tools that drive the whole app (the load benchmark); not imported by the app."""
