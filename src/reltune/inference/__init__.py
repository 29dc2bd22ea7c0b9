"""Inference: answering questions with a backbone (DESIGN §6, §7, §8).

runner        the one inference runner: questions in, beams + entropies out; accelerate split,
              shards written atomically and reused on rerun, progress, per-process timing
questions     question sources streamed in chunks (an in-memory table or rows of a parquet file)
generation    batched beam search with the entropy from the same generate call (GenerationSettings)
crops         union-box crops of scene images for the questions (CropLoader)
vision_cache  on-disk cache of frozen vision-encoder features
answers       parsing "Yes, s p o" / "No, ..." answers into outcomes
scoring       pool scores and validation recall (classification of the runner's answers)
predict       relation predictions for evaluation
commands      `reltune score` and `reltune predict`
"""
