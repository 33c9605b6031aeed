"""The media metadata port: what was uploaded, by whom, in which state, and which messages reference it."""
