"""Toy graphrec plugin: block ``toy_ui_conv`` and model ``toy_mf`` (registered through entry points)."""
