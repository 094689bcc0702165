"""Engine layer: the train, evaluate, predict, prepare and profile jobs, reporting progress by callback."""
