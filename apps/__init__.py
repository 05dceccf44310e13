"""hjtranslate's apps, installed as ``hjtranslate_apps``."""
