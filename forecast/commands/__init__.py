"""What every command does, with its terminal output; cli.py only parses options.

One module per command family, each imported by its command alone (``forecast predict`` loads
``commands.predict``, which never imports Lightning): ``train``, ``predict``, ``tune``, ``grid`` (benchmark and
dashboard) and ``store`` (runs, ui, datasets, models).
"""
