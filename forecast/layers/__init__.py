"""Blocks that forecasters share."""
