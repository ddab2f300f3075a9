"""`python -m keras_dp` is `keras-dp`."""

from keras_dp.cli import entry_point

if __name__ == "__main__":
    entry_point()
