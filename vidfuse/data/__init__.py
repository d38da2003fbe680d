"""Data: official split files -> Parquet (`prepare`) -> clips for training (`pipeline`), plus a synthetic set.

Modules, in data-flow order: `splits` (split-file readers, honest val subset), `video` (decode a video file or
frame folder), `prepare` (the Parquet writer), `sampling` (which frames make a clip), `transforms` (crops,
normalisation), `pipeline` (the Ray Data clip pipeline and `eval_clips` for predict), `synthetic` (a motion-only
action data set for the demo and the tests). Import the submodule you need; this package imports nothing heavy.
"""
