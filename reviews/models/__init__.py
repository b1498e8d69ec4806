"""Reviews data, split by concept: decisions (review) and rollouts (progressive delivery)."""

from reviews.models.decisions import *  # noqa: F403
from reviews.models.rollouts import *  # noqa: F403
