"""Reviews data, split by concept: decisions (review) and notifications (webhooks, digest)."""

from reviews.models.decisions import *  # noqa: F403
from reviews.models.notifications import *  # noqa: F403
