from dinokit.loss.criterion import SetCriterion, build_criterion

__all__ = ["SetCriterion", "build_criterion"]
