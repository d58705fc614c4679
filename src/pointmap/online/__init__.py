"""Online reconstruction of a video or a stream of frames with bounded memory (``pointmap
online``): keyframes (:mod:`.keyframes`), tracking and periodic refinement (:mod:`.tracker`), TUM
trajectories (:mod:`.trajectory`), and the run from frames to files (:mod:`.runner`)."""

from .keyframes import Keyframe, KeyframeSet, overlap_fraction
from .tracker import OnlineConfig, PairPredictor, Tracker
from .trajectory import absolute_trajectory_error, read_tum, write_tum

__all__ = ["Keyframe", "KeyframeSet", "OnlineConfig", "PairPredictor", "Tracker", "absolute_trajectory_error",
           "overlap_fraction", "read_tum", "write_tum"]
