"""tetherd: the daemon and its console."""
