"""Engine layer: the train, evaluate, predict, prepare and profile jobs; progress by callback."""
