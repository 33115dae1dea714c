"""The streaming service: detector stream in, Bluesky documents out."""

from .accounting import Accounting, Counts, CountsDict
from .feedback import FeedbackPublisher
from .service import Service, ServiceConfig

__all__ = ["Accounting", "Counts", "CountsDict", "FeedbackPublisher", "Service", "ServiceConfig"]
