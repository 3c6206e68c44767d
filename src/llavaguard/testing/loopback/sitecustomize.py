"""Keeps a test's Ray cluster on 127.0.0.1: imported at the start of every Python process
whose path holds this folder (``testing.ray`` puts it there for the cluster it starts)."""

import os

if os.environ.get("LLAVAGUARD_RAY_LOOPBACK"):
    from llavaguard.testing.ray import keep_on_loopback

    keep_on_loopback()
