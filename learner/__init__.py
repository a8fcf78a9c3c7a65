"""The learner: turns logged decisions and outcomes into an updated routing policy."""
