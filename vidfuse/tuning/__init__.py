"""Ray Tune searches: `space` reads `tune/*.yaml`, `search` runs the trials (one Ray Train run each) with ASHA,
and `results` writes the sorted trial table and `best.yaml`."""
