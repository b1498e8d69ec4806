"""Reviews data, split by concept: decisions (review), rollouts (progressive delivery), notifications."""

from reviews.models.decisions import *  # noqa: F403
from reviews.models.notifications import *  # noqa: F403
from reviews.models.rollouts import *  # noqa: F403
