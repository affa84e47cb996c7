"""Clip corpora: manifests, the synthetic scene renderer, real Debian media, swap donors."""
