"""The job object as the API shows it: made by genq.serialize, which the workers share (webhook bodies)."""
from genq.serialize import job_to_dict

__all__ = ["job_to_dict"]
