"""Training recipes, each ``setup`` / ``train`` / ``cleanup`` (see :class:`training.loop.Recipe`)."""
