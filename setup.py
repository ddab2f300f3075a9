"""Packaging for keras_dp."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    with open(os.path.join(HERE, "keras_dp", "__init__.py"), encoding="utf-8") as handle:
        return re.search(r'^__version__ = "([^"]+)"', handle.read(), re.M).group(1)


def _readme():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as handle:
        return handle.read()


# The versions CI tests (see .ci/run); the lower bounds are the oldest we
# have run, the upper bounds the next releases we have not.
TENSORFLOW = "tensorflow>=2.20,<2.22"
TENSORFLOW_CPU = "tensorflow-cpu>=2.20,<2.22"
# tf.summary (keras.callbacks.TensorBoard) needs it, and TensorFlow 2.21 no
# longer installs it (tensorflow/tensorflow#110709): every TensorFlow extra
# brings it, as `pip install tensorflow` did up to 2.20.
TENSORBOARD = "tensorboard>=2.20"

setup(
    name="keras-dp",
    version=_version(),
    description="Data-parallel training of Keras 3 models on tf.distribute that just works: "
                "one GPU, many GPUs, many machines, Colab.",
    long_description=_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_dp", "keras_dp.*"]),
    include_package_data=True,
    package_data={"keras_dp": ["py.typed"]},
    install_requires=[
        "keras>=3.10,<3.16",
        "tensorflow-datasets>=4.9.8",
        # tensorflow-datasets imports importlib_resources without declaring it.
        "importlib_resources>=5.0",
        "numpy>=1.26",
        "portpicker>=1.6",
        # keras_dp.launch pickles functions defined in a notebook's __main__.
        "cloudpickle>=2.2",
        "rich>=13.0",
    ],
    extras_require={
        "cpu": [TENSORFLOW_CPU, TENSORBOARD],
        "gpu": ["tensorflow[and-cuda]>=2.20,<2.22", TENSORBOARD],
        "tf": [TENSORFLOW, TENSORBOARD],
        # for a TensorFlow installed otherwise (a container's, a cluster's module)
        "tensorboard": [TENSORBOARD],
        "mpi": ["mpi4py>=3.1"],
        # examples/ray: keras_dp inside Ray Train's TensorflowTrainer (tested with 2.60.0)
        "ray": ["ray[train]>=2.40"],
        "notebooks": ["nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.0", "matplotlib>=3.8"],
        # the PNG plots of the benchmarks in benchmarks/ (not installed; they run without it)
        "bench": ["matplotlib>=3.8"],
        "test": ["pytest>=8.0", "pytest-timeout>=2.3", "nbclient>=0.10", "nbformat>=5.9",
                 "ipykernel>=6.0", "matplotlib>=3.8", TENSORBOARD,
                 # tests/test_recipes.py reads the Kubernetes manifests
                 "pyyaml>=6.0",
                 # the mpirun test's address exchange (binary wheels; the MPI
                 # library itself is Open MPI from apt, see .ci/run)
                 "mpi4py>=3.1"],
    },
    entry_points={"console_scripts": ["keras-dp = keras_dp.cli:entry_point"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
