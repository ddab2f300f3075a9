"""What every Keras-layer part shares: its description, its version and shape checks (fail
closed), and the record of what it replaced (for `remove()`). See docs/keras_layer.md."""

import dataclasses
import functools
import importlib
import inspect
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from keras_dp.errors import KerasDPError

#: The releases every part is tested on (setup.py: keras>=3.10,<3.16, tensorflow>=2.20,<2.22).
KERAS = ((3, 10), (3, 15))
TENSORFLOW = ((2, 20), (2, 21))
#: The switch of the parts `KERAS_DP_KERAS_FIX` controls.
SWITCH = "KERAS_DP_KERAS_FIX"

_MISSING = object()   # the owner did not define the replaced attribute itself
_applied: Dict[str, List[tuple]] = {}   # part -> [(owner, name, original or _MISSING), ...]


@dataclasses.dataclass(frozen=True)
class Target:
    """A Keras or TensorFlow attribute a part replaces or relies on."""

    owner: Callable[[], object]   # returns the class or module (imports lazily)
    name: str
    parameters: Optional[Tuple[str, ...]] = None   # leading names it takes (None: it exists)


@dataclasses.dataclass(frozen=True)
class Part:
    """One change keras_dp makes to Keras' or TensorFlow's behaviour."""

    name: str   # what KERAS_DP_KERAS_FIX lists
    fixes: str   # what goes wrong without it, in one line
    upstream: str   # the upstream issue (or pull request) link
    when: str   # when keras_dp applies it
    switch: str = SWITCH   # how to turn it off
    targets: Sequence[Target] = ()   # what it replaces or relies on (checked first)
    keras: Tuple[Tuple[int, int], Tuple[int, int]] = KERAS   # ((major, minor), (major, minor))
    tensorflow: Tuple[Tuple[int, int], Tuple[int, int]] = TENSORFLOW

    def versions(self) -> str:
        """The releases it is for, e.g. "Keras 3.10-3.15, TensorFlow 2.20-2.21"."""
        keras, tf = ("{}.{}-{}.{}".format(*a, *b) for a, b in (self.keras, self.tensorflow))
        return f"Keras {keras}, TensorFlow {tf}"


def _release(version: str) -> Tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def installed() -> Tuple[str, str]:
    """The installed `(Keras version, TensorFlow version)`."""
    import keras
    import tensorflow as tf

    return keras.__version__, tf.__version__


def in_range(part: Part, versions: Optional[Tuple[str, str]] = None) -> bool:
    """Whether the installed Keras and TensorFlow are releases `part` is for."""
    keras_version, tf_version = versions or installed()
    return (part.keras[0] <= _release(keras_version) <= part.keras[1]
            and part.tensorflow[0] <= _release(tf_version) <= part.tensorflow[1])


def _shape_problem(target: Target) -> Optional[str]:
    try:
        owner = target.owner()
    except (ImportError, AttributeError) as exc:
        return f"cannot import the owner of {target.name} ({exc})"
    label = f"{getattr(owner, '__name__', owner)}.{target.name}"
    if not hasattr(owner, target.name):
        return f"{label} is missing"
    if target.parameters is None:
        return None
    try:
        names = tuple(inspect.signature(getattr(owner, target.name)).parameters)
    except (TypeError, ValueError):
        return f"{label} has no readable signature"
    if names[:len(target.parameters)] != tuple(target.parameters):
        return (f"{label} takes ({', '.join(names)}), the part expects "
                f"({', '.join(target.parameters)}, ...)")
    return None


def check(part: Part) -> None:
    """Raises `KerasDPError` unless `part` was written for this Keras and TensorFlow (the
    versions are in its range, what it replaces exists with the expected signature)."""
    keras_version, tf_version = installed()
    problems = [] if in_range(part, (keras_version, tf_version)) else [
        "these releases are outside the range it is tested on"]
    problems += [p for p in (_shape_problem(t) for t in part.targets) if p]
    if problems:
        raise KerasDPError(
            f"keras_dp's Keras-layer part {part.name} cannot be applied to Keras "
            f"{keras_version} with TensorFlow {tf_version}: {'; '.join(problems)}. It is "
            f"written for {part.versions()}; without it {part.fixes}. Install a tested "
            f"release (pip install \"keras>=3.10,<3.16\" \"tensorflow>=2.20,<2.22\"), or "
            f"turn the part off knowingly: {part.switch}.")


def replace(part: str, owner, name: str, function) -> None:
    """Sets `owner.name = function`, remembering what to restore."""
    _applied.setdefault(part, []).append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, function)


def is_applied(part: str) -> bool:
    return part in _applied


def restore(part: str) -> None:
    """Puts back what `part` replaced."""
    for owner, name, saved in reversed(_applied.pop(part, [])):
        if saved is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, saved)


def wrap(part: str, owner, name: str, body: Callable) -> None:
    """Replaces `owner.name` by `body(first, original bound to first, *args, **kwargs)`."""
    original = getattr(owner, name)
    replace(part, owner, name, functools.wraps(original)(
        lambda first, *args, **kwargs: body(first, functools.partial(original, first), *args,
                                            **kwargs)))


def lazy(module: str, attribute: str = None) -> Callable[[], object]:
    """A function returning `module` (or its `attribute`), imported when called."""
    def load():
        found = importlib.import_module(module)
        return getattr(found, attribute) if attribute else found

    return load


trainer = lazy("keras.src.backend.tensorflow.trainer")
tf_trainer = lazy("keras.src.backend.tensorflow.trainer", "TensorFlowTrainer")
tf_optimizer = lazy("keras.src.backend.tensorflow.optimizer", "TFOptimizer")
base_optimizer = lazy("keras.src.optimizers.base_optimizer", "BaseOptimizer")
