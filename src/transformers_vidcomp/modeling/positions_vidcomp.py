r"""Multimodal rotary positions (M-RoPE) for the tokens a video keeps.

Qwen's LLMs rotate each token by three positions: time, height and width. Qwen computes them from the full grid of
every video (`get_rope_index`), which no longer describes a video once a sampler or compressor removed, pooled or
merged tokens. Here every token that remains carries its own place instead (`token_positions`: its temporal position
and its row and column in its frame's merged grid, the places Qwen would give that very token), and the sequence's
positions are built from those places:

- a text token is one past the previous text position, after skipping what each earlier video spans;
- a video token is `start + (t, h, w)`, where `start` is the position the video begins at;
- after a video the text continues at `start + video_position_span`, Qwen's rule (`max(grid_h, grid_w)` of the merged
  grid in Transformers' Qwen2.5-VL and Qwen3-VL), whatever the number of tokens the video kept.

Temporal positions follow each family:

- Qwen2.5-VL: `floor((time - video start) * tokens_per_second)`, with the time of a temporal patch's first frame.
  With Qwen's own uniform frames this is `patch * second_per_grid_t * tokens_per_second`, Qwen's
  `second_per_grid_ts` scheme, and after a sampler it is the same formula applied to the true times of the kept frames.
- Qwen3-VL: 0 for every token: each temporal patch is its own vision segment, with its time written as text.
"""

import torch


# Times are exact multiples of the sampling interval up to float rounding; this keeps `floor` on the right integer.
TIME_SLACK = 1e-4


def temporal_positions(
    family: str, token_time_offsets: torch.FloatTensor, tokens_per_second: float | None
) -> torch.LongTensor:
    r"""
    The temporal M-RoPE position of each video token within its video.

    Args:
        family (`str`): `"qwen2_5_vl"` or `"qwen3_vl"`.
        token_time_offsets (`torch.FloatTensor` of shape `(total_tokens,)`):
            Seconds from the video's first given frame to the token's temporal patch.
    """
    if family == "qwen3_vl":
        return torch.zeros_like(token_time_offsets, dtype=torch.long)
    return torch.floor(token_time_offsets.double() * tokens_per_second + TIME_SLACK).long()


def multimodal_position_ids(
    input_ids: torch.LongTensor,
    attention_mask: torch.LongTensor | None,
    video_token_id: int,
    token_positions: torch.LongTensor,
    token_counts: torch.LongTensor,
    video_position_spans: torch.LongTensor,
) -> torch.LongTensor:
    r"""
    The (temporal, height, width) positions of a sequence whose videos are expanded to their kept tokens, for the
    whole batch at once.

    Args:
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            One `video_token_id` per video token, videos in the order of `token_counts`.
        attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Padding (0) takes no position and gets 0, as in Qwen.
        token_positions (`torch.LongTensor` of shape `(total_tokens, 3)`):
            Each video token's (temporal, row, column) place, relative to the video's start.
        token_counts (`torch.LongTensor` of shape `(num_videos,)`)
        video_position_spans (`torch.LongTensor` of shape `(num_videos,)`):
            How far the text after each video moves on from the video's start.
    Returns:
        `torch.LongTensor` of shape `(3, batch_size, sequence_length)`.
    """
    device = input_ids.device
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    is_video = (input_ids == video_token_id) & real
    if int(is_video.sum()) != token_positions.shape[0]:
        raise ValueError(
            f"The text holds {int(is_video.sum())} video tokens for {token_positions.shape[0]} token positions."
        )
    advance = (real & ~is_video).long()
    # A video moves the text on by its span once, at its last token (video tokens are counted in row-major order).
    video_token_rows = torch.nonzero(is_video.flatten()).squeeze(1)
    last_tokens = video_token_rows[torch.cumsum(token_counts.to(device), 0) - 1]
    advance.view(-1)[last_tokens] = video_position_spans.to(device)
    start = torch.cumsum(advance, -1) - advance
    positions = start.unsqueeze(0).repeat(3, 1, 1)
    positions.masked_fill_(~real.unsqueeze(0), 0)
    video_positions = start[is_video].unsqueeze(-1) + token_positions.to(device)
    positions.permute(1, 2, 0)[is_video] = video_positions
    return positions


__all__ = ["multimodal_position_ids", "temporal_positions"]
