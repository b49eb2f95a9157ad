r"""
The adaptive video sampler (AVS) of "Learning Compact Video Representations" (arXiv 2602.17869): shots from
TransNetV2, then a frame budget spread over the shots by how much information each holds.

The paper calls the sampler information-density based but does not publish its allocation rule, so this is ours:

1. **Shots.** TransNetV2 scores every thumbnail (decoded at `decode_fps`, 48x27). A frame starts a new shot when its
   predecessor's transition probability exceeds the detector's `threshold` and is the largest within `nms_seconds`
   centred on it (non-maximum suppression; of equal maxima the earliest wins, and transitions closer than half a
   window to the previous one are dropped), so one gradual transition gives one cut and no shot but the last is
   shorter than half a window.
2. **Information density.** Frame `t` carries `static_information + change_t`, where `change_t` is the mean absolute
   thumbnail difference to the previous frame of the same shot (0..1). A shot's information is the sum over its frames:
   long shots and busy shots hold more, a static shot still holds something per second.
3. **Allocation** of `max_frames` keyframes:
   - more shots than budget: the `max_frames` shots with the most information get one keyframe each;
   - otherwise every shot gets one, and the rest is shared in proportion to information (largest remainders), never
     more than a shot has frames.
4. **Placement.** Within a shot, `k` keyframes sit at the `(j + 0.5) / k` quantiles of its cumulative information, so
   they crowd where the content changes; they are made distinct and stay inside the shot.

Selection happens while decoding: the processor decodes thumbnails, calls [`AdaptiveVideoSampler.plan`], and decodes
only the chosen frames at full resolution (see `VidCompProcessor`). Frames that reach the model unselected (for
example an array passed without the processor's frame selector) are thinned uniformly to `max_frames`.
"""


from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import ModelOutput

from .components_vidcomp import (
    InstructionCondition,
    PackedFrames,
    InvalidVideoInputError,
    SamplerOutput,
    TokenBudgetError,
    VidCompSampler,
    register_sampler,
    uniform_keep_mask,
)
from .configuration_transnetv2 import TransNetV2Config
from .modeling_transnetv2 import TransNetV2Model


@strict
class AdaptiveVideoSamplerConfig(PreTrainedConfig):
    r"""
    max_frames (`int`, *optional*, defaults to 32):
        The frame budget: the most keyframes kept per video.
    decode_fps (`float`, *optional*, defaults to 10.0):
        Rate at which thumbnails are decoded for shot detection (the paper's 10 FPS).
    nms_seconds (`float`, *optional*, defaults to 3.0):
        Width of the non-maximum suppression window over transition probabilities (the paper's 3 s).
    static_information (`float`, *optional*, defaults to 0.02):
        Information every frame carries even without any change, so static shots still earn frames by duration.
        The change term is a mean absolute pixel difference in 0..1, typically 0.01 to 0.1 within a shot.
    shot_detector_config (`dict` or `TransNetV2Config`, *optional*):
        The TransNetV2 network; the published architecture by default.
    """

    model_type = "vidcomp_avs_sampler"
    sub_configs_defaults = {"shot_detector_config": SubConfigSpec(config_class=TransNetV2Config, model_type=TransNetV2Config.model_type)}

    max_frames: int = 32
    decode_fps: float = 10.0
    nms_seconds: float = 3.0
    static_information: float = 0.02
    shot_detector_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        if self.max_frames < 1:
            raise ValueError(f"max_frames is the frame budget and must be at least 1, got {self.max_frames}.")
        if self.decode_fps <= 0 or self.nms_seconds <= 0:
            raise ValueError(f"decode_fps and nms_seconds must be positive, got {self.decode_fps} and {self.nms_seconds}.")
        if self.static_information <= 0:
            raise ValueError(f"static_information must be positive, got {self.static_information}.")
        super().__post_init__(**kwargs)


@dataclass
class ShotPlan(ModelOutput):
    r"""
    keep (`torch.BoolTensor` of shape `(num_frames,)`): the chosen keyframes among the thumbnails.
    shot_ids (`torch.LongTensor` of shape `(num_frames,)`): the shot of every thumbnail, from 0.
    transition_probabilities (`torch.FloatTensor` of shape `(num_frames,)`): TransNetV2's per-frame output.
    shot_starts (`torch.LongTensor` of shape `(num_shots,)`): the first thumbnail of each shot.
    shot_information (`torch.FloatTensor` of shape `(num_shots,)`): each shot's information (see the module doc).
    frames_per_shot (`torch.LongTensor` of shape `(num_shots,)`): keyframes allocated to each shot.
    """

    keep: torch.BoolTensor | None = None
    shot_ids: torch.LongTensor | None = None
    transition_probabilities: torch.FloatTensor | None = None
    shot_starts: torch.LongTensor | None = None
    shot_information: torch.FloatTensor | None = None
    frames_per_shot: torch.LongTensor | None = None


def shot_starts_by_nms(probabilities: torch.Tensor, threshold: float, window: int) -> torch.BoolTensor:
    r"""
    Frames that start a shot. A transition is a frame above `threshold` that is the largest within `window` frames
    centred on it and lies more than `window // 2` frames after the previous transition (or the start of the video);
    of equal maxima the earliest wins. The shot starts on the frame after it, so every shot but the last is more
    than half a window long. Frame 0 starts the first shot.
    """
    radius = window // 2
    window_max = F.max_pool1d(probabilities[None, None].float(), 2 * radius + 1, stride=1, padding=radius)[0, 0]
    peaks = torch.nonzero((probabilities > threshold) & (probabilities == window_max)).flatten()
    # Greedy suppression: from each kept transition jump to the first peak beyond its radius. The loop runs once per
    # kept transition (at most one per half window), not per frame; a plateau of equal maxima thins out correctly.
    transitions, previous = [], 0
    while True:
        following = int(torch.searchsorted(peaks, previous + radius, right=True))
        if following >= len(peaks):
            break
        previous = int(peaks[following])
        transitions.append(previous)
    starts = torch.zeros(len(probabilities), dtype=torch.bool, device=probabilities.device)
    starts[0] = True
    after = torch.tensor(transitions, dtype=torch.long, device=probabilities.device) + 1
    starts[after[after < len(probabilities)]] = True
    return starts


def mean_absolute_change(thumbnails: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    r"""
    Mean absolute difference of each uint8 frame `(T, H, W, 3)` to the previous one, in 0..1 (0 for the first), in
    int16 chunks so an hour of thumbnails is never copied in float.
    """
    change = torch.zeros(len(thumbnails))
    for start in range(1, len(thumbnails), chunk):
        current = thumbnails[start : start + chunk].to(torch.int16)
        previous = thumbnails[start - 1 : start - 1 + len(current)].to(torch.int16)
        change[start : start + len(current)] = (current - previous).abs().flatten(1).float().mean(1) / 255.0
    return change


def allocate_frames(information: torch.Tensor, lengths: torch.Tensor, budget: int) -> torch.LongTensor:
    r"""
    Keyframes per shot: with more shots than `budget`, one each for the `budget` most informative (ties: earlier);
    otherwise one each plus the rest in proportion to `information` (largest remainders), capped at each shot's
    `lengths`. Returns `(num_shots,)` counts summing to `min(budget, lengths.sum())`.
    """
    num_shots = len(information)
    if num_shots >= budget:
        order = torch.sort(information, descending=True, stable=True).indices[:budget]
        return torch.zeros_like(lengths).index_fill_(0, order, 1)
    counts = torch.ones_like(lengths)
    # Each round hands the remaining frames to shots with room, in proportion to information; a round that would
    # overfill a shot caps it and leaves the excess for the next round. Rounds are bounded by the number of shots.
    for _ in range(num_shots):
        remaining = min(budget, int(lengths.sum())) - int(counts.sum())
        room = lengths - counts
        if remaining <= 0:
            break
        weight = torch.where(room > 0, information, torch.zeros_like(information)).double()
        share = remaining * weight / weight.sum()
        extra = torch.minimum(share.floor().long(), room)
        leftover = remaining - int(extra.sum())
        if leftover > 0:
            remainder = torch.where(room > extra, share - share.floor(), torch.full_like(share, -1.0))
            order = torch.sort(remainder, descending=True, stable=True).indices[:leftover]
            extra[order[remainder[order] >= 0]] += 1
        counts += extra
    return counts


def place_keyframes(
    density: torch.Tensor, shot_ids: torch.LongTensor, shot_starts: torch.LongTensor, counts: torch.LongTensor
) -> torch.BoolTensor:
    r"""
    Puts `counts[s]` distinct keyframes in each shot `s`, at the `(j + 0.5) / counts[s]` quantiles of the shot's
    cumulative `density`. All shots at once: one `searchsorted` over the video's cumulative density.
    """
    num_frames = len(density)
    lengths = torch.diff(shot_starts, append=torch.tensor([num_frames], device=shot_starts.device))
    cumulative = torch.cumsum(density.double(), 0)
    before_shot = torch.cat([cumulative.new_zeros(1), cumulative])[shot_starts]
    shot_total = cumulative[shot_starts + lengths - 1] - before_shot
    slot_shot = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    slot_rank = torch.arange(len(slot_shot), device=counts.device) - (torch.cumsum(counts, 0) - counts)[slot_shot]
    targets = before_shot[slot_shot] + (slot_rank + 0.5) / counts[slot_shot] * shot_total[slot_shot]
    positions = torch.searchsorted(cumulative, targets)
    positions = torch.minimum(torch.maximum(positions, shot_starts[slot_shot]), shot_starts[slot_shot] + lengths[slot_shot] - 1)
    # Distinct and inside the shot: make position - rank non-decreasing within each shot (positions then strictly
    # increase), then cap so the last keyframes still fit before the shot ends. The per-shot offset keeps the running
    # maximum from carrying over from one shot into the next.
    offset = slot_rank - slot_shot * (2 * num_frames + 1)
    positions = torch.cummax(positions - offset, 0).values + offset
    shot_end = shot_starts[slot_shot] + lengths[slot_shot] - 1
    positions = torch.minimum(positions, shot_end - (counts[slot_shot] - 1 - slot_rank))
    keep = torch.zeros(num_frames, dtype=torch.bool, device=density.device)
    keep[positions] = True
    return keep


@register_sampler
class AdaptiveVideoSampler(VidCompSampler):
    r"""
    Adaptive video sampling: TransNetV2 shots, frames allocated by information density (see the module docstring).
    It selects at decode time (`selects_frames_at_decode`), through [`AdaptiveVideoSampler.plan`].
    """

    config: AdaptiveVideoSamplerConfig
    selects_frames_at_decode = True

    def __init__(self, config: AdaptiveVideoSamplerConfig):
        super().__init__(config)
        self.shot_detector = TransNetV2Model(config.shot_detector_config)
        self.post_init()

    def max_kept_frames(self, num_frames: int) -> int:
        return min(num_frames, self.config.max_frames)

    @torch.no_grad()
    def plan(self, thumbnails: torch.Tensor, timestamps: torch.Tensor, max_frames: int | None = None) -> ShotPlan:
        r"""
        Chooses keyframes among a video's thumbnails.

        Args:
            thumbnails (`torch.ByteTensor` of shape `(num_frames, 27, 48, 3)`): RGB thumbnails at `decode_fps`.
            timestamps (`torch.FloatTensor` of shape `(num_frames,)`): their times in seconds.
            max_frames (`int`, *optional*): the budget; `config.max_frames` by default.
        """
        budget = self.config.max_frames if max_frames is None else max_frames
        if isinstance(budget, bool) or budget < 1:
            raise TokenBudgetError(f"The frame budget must be at least 1 frame, got {budget!r}.")
        thumbnails = torch.as_tensor(thumbnails)
        timestamps = torch.as_tensor(timestamps, dtype=torch.float32)
        if timestamps.shape != thumbnails.shape[:1]:
            raise InvalidVideoInputError(
                f"Got {len(thumbnails)} thumbnails but {len(timestamps)} timestamps; give one time per thumbnail."
            )
        single, _ = self.shot_detector.predict_frames(thumbnails)
        probabilities = torch.from_numpy(single)
        duration = float(timestamps[-1] - timestamps[0]) if len(timestamps) > 1 else 0.0
        rate = (len(timestamps) - 1) / duration if duration > 0 else self.config.decode_fps
        window = max(1, round(self.config.nms_seconds * rate))
        starts = shot_starts_by_nms(probabilities, self.shot_detector.config.threshold, window)
        shot_ids = torch.cumsum(starts.long(), 0) - 1

        change = mean_absolute_change(thumbnails)
        change[starts] = 0.0  # a cut is the boundary between shots, not information inside one
        density = self.config.static_information + change
        num_shots = int(shot_ids[-1]) + 1
        information = torch.zeros(num_shots, dtype=density.dtype).index_add_(0, shot_ids, density)
        shot_starts = torch.nonzero(starts).flatten()
        lengths = torch.bincount(shot_ids, minlength=num_shots)
        counts = allocate_frames(information, lengths, budget)
        keep = place_keyframes(density, shot_ids, shot_starts, counts)
        return ShotPlan(
            keep=keep,
            shot_ids=shot_ids,
            transition_probabilities=probabilities,
            shot_starts=shot_starts,
            shot_information=information,
            frames_per_shot=counts,
        )

    def forward(
        self,
        frames: PackedFrames,
        frame_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
    ) -> SamplerOutput:
        r"""Frames were chosen at decode time; any video with more than `max_frames` is thinned uniformly."""
        length = frames.frame_counts.to(frames.values.device)[frames.video_index()]
        keep = uniform_keep_mask(frames.position_in_video(), length, torch.full_like(length, self.config.max_frames))
        return SamplerOutput(keep_mask=keep)


__all__ = [
    "AdaptiveVideoSampler",
    "AdaptiveVideoSamplerConfig",
    "ShotPlan",
    "allocate_frames",
    "mean_absolute_change",
    "place_keyframes",
    "shot_starts_by_nms",
]
