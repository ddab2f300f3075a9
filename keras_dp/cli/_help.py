"""The help formatter of keras-dp's sub-commands."""

import argparse


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Appends `(default: X)` where it says something: not for None or False, nor where the
    help already says its default. Descriptions and epilogs are printed as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or "(default" in text:
            return text
        return super()._get_help_string(action)
