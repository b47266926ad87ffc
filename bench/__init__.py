"""The benchmark: paystream against bare baselines, figures as ratios measured in one run."""
