"""tetherd: the daemon (its admin console, tetherctl, is the package :mod:`tether.console`)."""
